/// <shmkit/shmkit.hpp>: everything shmkit offers, in one include.
///
///   segment       <shmkit/shm/segment.hpp>        fixed-address shared mapping, OffsetPtr
///   locks         <shmkit/locks/*.hpp>            Lock, RLock, Condition, Semaphore (owner-death safe)
///   heap          <shmkit/heap/*.hpp>             Heap, Allocator<T>, named objects
///   transports    <shmkit/transport/*.hpp>        remote memory: wire format, agent, socket / vm / io_uring
///   channels      <shmkit/channels/*.hpp>         shmkit::Queue, shmkit::Channel, shmkit::WorkerPool, Publisher/Subscriber
#pragma once

#include "shmkit/sys/error.hpp"
#include "shmkit/sys/log.hpp"
#include "shmkit/sys/process.hpp"

#include "shmkit/locks/condition.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/locks/rlock.hpp"
#include "shmkit/locks/semaphore.hpp"

#include "shmkit/shm/offset_ptr.hpp"
#include "shmkit/shm/segment.hpp"

#include "shmkit/heap/allocator.hpp"
#include "shmkit/heap/heap.hpp"

#include "shmkit/transport/agent.hpp"
#include "shmkit/transport/connect_memory.hpp"
#include "shmkit/transport/memory_transport.hpp"
#include "shmkit/transport/socket_transport.hpp"
#include "shmkit/transport/splice_pipe.hpp"
#include "shmkit/transport/uring_transport.hpp"
#include "shmkit/transport/vm_transport.hpp"
#include "shmkit/transport/wire.hpp"

#include "shmkit/channels/channel.hpp"
#include "shmkit/channels/pool.hpp"
#include "shmkit/channels/pubsub.hpp"
#include "shmkit/channels/queue.hpp"
