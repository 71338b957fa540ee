// libFuzzer target: wire and memory-protocol decoding (fuzz/targets/wire_decode.cpp).
#include <cstddef>
#include <cstdint>

#include "targets/wire_decode.cpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return shmkit::fuzz::wire_decode_one(data, size);
}
