// libFuzzer target: the memory agent serving a hostile client stream (fuzz/targets/agent_stream.cpp).
#include <cstddef>
#include <cstdint>

#include "targets/agent_stream.cpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return shmkit::fuzz::agent_stream_one(data, size);
}
