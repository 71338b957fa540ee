/// Former home of the stream transports' wrappers, now in socket.hpp, file.hpp, pipe.hpp and
/// signal.hpp. Kept so that existing includes build; include the concept header instead.
#pragma once

#include "shmkit/sys/file.hpp"
#include "shmkit/sys/pipe.hpp"
#include "shmkit/sys/signal.hpp"
#include "shmkit/sys/socket.hpp"
