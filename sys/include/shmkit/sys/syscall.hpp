/// The syscall layer: every mmap, file, futex, splice, process_vm and socket call that shmkit makes
/// goes through shmkit::sys, so that each is checked in one way and can be found in one place. This
/// header includes the whole layer; each concept has its own header:
///
///   memory.hpp      mmap, munmap, memfd_create, page_size
///   file.hpp        open, shm_open, sizes and space, flock, read/write, descriptor flags, poll
///   socket.hpp      socketpair, send/recv, descriptor passing (SCM_RIGHTS), socket options
///   pipe.hpp        pipe2, splice, tee, pipe capacity
///   process_vm.hpp  process_vm_readv / writev
///   signal.hpp      the thread's signal mask, pending signals
///   thread.hpp      gettid, the robust-futex list head, does a thread id exist
///   proc_control.hpp fork, waitpid, kill, exec, prctl, exit
///   cpu.hpp         current CPU, spin hint, sched_yield
///   futex_word.hpp  the futex calls (the one atomic -> futex word cast)
///   uring.hpp       io_uring (not included here: it brings <liburing.h>)
///   error.hpp       shmkit::Error, and sys::check, which turns -errno into one on set-up paths
///
/// Convention (liburing's): each wrapper is noexcept and returns the kernel's result, or -errno on
/// failure; EINTR is retried where the call is restartable without side effects.
#pragma once

#include "shmkit/sys/cpu.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/file.hpp"
#include "shmkit/sys/futex_word.hpp"
#include "shmkit/sys/memory.hpp"
#include "shmkit/sys/pipe.hpp"
#include "shmkit/sys/proc_control.hpp"
#include "shmkit/sys/process_vm.hpp"
#include "shmkit/sys/signal.hpp"
#include "shmkit/sys/socket.hpp"
#include "shmkit/sys/thread.hpp"
