# Every dependency comes from a Debian package. A missing one stops configuration with a message
# that names the package to install (the quick start in README.md installs them all).
find_package(PkgConfig QUIET)
find_package(Threads REQUIRED)

macro(shmkit_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR "shmkit needs ${what}: install it with `apt-get install ${package}`")
  endif()
endmacro()

find_package(Boost 1.74 QUIET)
shmkit_require(Boost_FOUND "Boost.Interprocess" libboost-dev)

find_path(URING_INCLUDE_DIR liburing.h)
find_library(URING_LIBRARY uring)
if(URING_INCLUDE_DIR AND URING_LIBRARY)
  set(URING_FOUND TRUE)  # linked by name (-luring) so the installed package needs no find module
endif()
shmkit_require(URING_FOUND "liburing" liburing-dev)

find_package(fmt QUIET)
shmkit_require(fmt_FOUND "fmt" libfmt-dev)
find_package(spdlog QUIET)
shmkit_require(spdlog_FOUND "spdlog" libspdlog-dev)

if(SHMKIT_BUILD_TESTS)
  find_package(GTest QUIET)
  shmkit_require(GTest_FOUND "GoogleTest" "libgtest-dev libgmock-dev")
endif()
if(SHMKIT_BUILD_BENCH)
  find_package(benchmark QUIET)
  shmkit_require(benchmark_FOUND "Google Benchmark" libbenchmark-dev)
endif()
