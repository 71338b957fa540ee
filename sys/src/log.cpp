#include "shmkit/sys/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <memory>

namespace shmkit {

spdlog::logger& log() {
  static std::shared_ptr<spdlog::logger> logger = [] {
    auto l = std::make_shared<spdlog::logger>("shmkit",
                                              std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    const char* env = std::getenv("SHMKIT_LOG");
    l->set_level(env != nullptr ? spdlog::level::from_str(env) : spdlog::level::warn);
    l->set_pattern("[%H:%M:%S.%e] [shmkit %P] [%l] %v");
    return l;
  }();
  return *logger;
}

}  // namespace shmkit
