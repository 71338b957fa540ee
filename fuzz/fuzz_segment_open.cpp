// libFuzzer target: a segment file of hostile bytes opened and walked (fuzz/targets/segment_open.cpp).
#include <cstddef>
#include <cstdint>

#include "targets/segment_open.cpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return shmkit::fuzz::segment_open_one(data, size);
}
