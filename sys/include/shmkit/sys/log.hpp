/// Logging: one spdlog logger named "shmkit", writing to stderr. Its level comes from the
/// environment variable SHMKIT_LOG (trace, debug, info, warn, error, critical, off; default warn).
/// Lifecycle events (create, open, relocate, grow, stale clean-up, repair) log at info or debug;
/// nothing is logged on hot paths.
#pragma once

#include <spdlog/logger.h>

namespace shmkit {
spdlog::logger& log();
}
