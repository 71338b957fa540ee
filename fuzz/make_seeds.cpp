// Writes the seed corpora under fuzz/corpus/<target>/ (valid and near-valid inputs that reach
// deep code quickly). Run from the repository root after changing a layout:
//     build/fuzz/make_seeds fuzz/corpus
// The files are committed; regenerating rewrites the seed_* files and leaves crash_* files alone.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../heap/src/layout.hpp"
#include "shmkit/shm/segment_header.hpp"
#include "shmkit/transport/memory_protocol.hpp"
#include "shmkit/transport/wire.hpp"
#include "targets/agent_stream.cpp"

namespace fs = std::filesystem;
namespace wire = shmkit::transport::wire;
namespace mp = shmkit::transport::memproto;
using Bytes = std::vector<std::uint8_t>;

static void put(const fs::path& dir, const std::string& name, const Bytes& b) {
  fs::create_directories(dir);
  std::ofstream f(dir / ("seed_" + name), std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}
template <class T>
static void append(Bytes& b, const T& v) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
  b.insert(b.end(), p, p + sizeof(T));
}
static void append_bytes(Bytes& b, const std::byte* p, std::size_t n) {
  const auto* q = reinterpret_cast<const std::uint8_t*>(p);
  b.insert(b.end(), q, q + n);
}
// Patch for the segment_open "patches" mode: u32 offset, u8 len, bytes.
template <class T>
static void patch(Bytes& b, std::size_t off, const T& v) {
  append(b, static_cast<std::uint32_t>(off));
  b.push_back(static_cast<std::uint8_t>(sizeof(T)));
  append(b, v);
}

static Bytes frame(wire::MsgId id, const Bytes& payload, wire::Tag tag = 1) {
  Bytes b;
  wire::Header h{static_cast<std::uint32_t>(wire::kHeaderSize + payload.size()), id, 0, tag};
  append(b, h);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}
static Bytes hello_frame(const std::vector<wire::MsgId>& ids = {}, const std::vector<std::string>& feats = {}) {
  std::vector<std::byte> buf(4096);
  wire::Hello h;
  h.pid = 1234;
  h.ids = ids;
  h.features = feats;
  std::uint32_t n = wire::encode_hello(buf, 1, h);
  Bytes b;
  append_bytes(b, buf.data(), n);
  return b;
}
static Bytes error_frame(int code, const std::string& detail) {
  std::vector<std::byte> buf(4096);
  std::uint32_t n = wire::encode_error(buf, 3, mp::ids::read, code, detail);
  Bytes b;
  append_bytes(b, buf.data(), n);
  return b;
}
static Bytes pod_payload(std::uint64_t a, std::uint64_t l) {
  Bytes p;
  append(p, a);
  append(p, l);
  return p;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  const fs::path root = argv[1];
  using shmkit::SegmentHeader;
  using shmkit::heapimpl::ControlBlock;

  // ---- fuzz_segment_open ----
  {
    const fs::path d = root / "fuzz_segment_open";
    put(d, "raw_empty", {0});
    put(d, "raw_zeros", Bytes(1 + 64, 0) );
    Bytes magic{0};
    append(magic, SegmentHeader::kMagic);
    append(magic, SegmentHeader::kLayoutVersion);
    append(magic, static_cast<std::uint32_t>(sizeof(SegmentHeader)));
    put(d, "raw_magic_only", magic);
    put(d, "template", {1});
    put(d, "patches_none", {2});
    const std::size_t ctl = 16384;  // heap control block: round_up(kDataOffset, 64)
    auto seg_field = [](auto member) { return static_cast<std::size_t>(member); };
    struct P {
      const char* name;
      std::size_t off;
      std::uint64_t value;
    };
    const P patches[] = {
        {"seg_size_huge", seg_field(offsetof(SegmentHeader, size)), 1ull << 39},
        {"seg_capacity_small", seg_field(offsetof(SegmentHeader, capacity)), 4096},
        {"seg_base_zero", seg_field(offsetof(SegmentHeader, base)), 0},
        {"seg_state_init", seg_field(offsetof(SegmentHeader, state)), 1},
        {"seg_heap_root_far", offsetof(SegmentHeader, roots), 0x7ffff000},
        {"seg_heap_root_zero", offsetof(SegmentHeader, roots), 0},
        {"seg_heap_root_misaligned", offsetof(SegmentHeader, roots), ctl + 8},
        {"attach_pid_negative", offsetof(SegmentHeader, attach), 0xffffffff80000000ull},
        {"heap_arena_begin_zero", ctl + offsetof(ControlBlock, arena_begin), 0},
        {"heap_arena_begin_odd", ctl + offsetof(ControlBlock, arena_begin), 0x30008},
        {"heap_top_huge", ctl + offsetof(ControlBlock, top), 1ull << 40},
        {"heap_top_low", ctl + offsetof(ControlBlock, top), 0x30000},
        {"heap_bin0_head_wild", ctl + offsetof(ControlBlock, bin_head), 0x123456789},
        {"heap_bitmap_all", ctl + offsetof(ControlBlock, bitmap), ~0ull},
        {"heap_class0_head_wild", ctl + offsetof(ControlBlock, classes) + offsetof(shmkit::heapimpl::ClassCentral, head), 0xdeadbeef0},
        {"heap_dir_table_wild", ctl + offsetof(ControlBlock, dir_table), 0x7fffffff0},
        {"heap_dir_capacity_huge", ctl + offsetof(ControlBlock, dir_capacity), 1ull << 40},
        {"heap_arena_log_count", ctl + offsetof(ControlBlock, arena_log), 5},
        {"heap_owner0", ctl + offsetof(ControlBlock, owners), 1},
    };
    for (const P& p : patches) {
      Bytes b{2};
      patch(b, p.off, p.value);
      put(d, p.name, b);
    }
  }

  // ---- fuzz_wire_decode ----
  {
    const fs::path d = root / "fuzz_wire_decode";
    auto with = [](std::uint8_t maxsel, std::uint8_t prog, const Bytes& stream) {
      Bytes b{maxsel, prog};
      b.insert(b.end(), stream.begin(), stream.end());
      return b;
    };
    put(d, "hello_plain", with(3, 0, hello_frame()));
    put(d, "hello_agent", with(3, 1, hello_frame({16, 17, 18}, {"memory", "splice", "vm-cookie"})));
    put(d, "error", with(0, 2, error_frame(14, "range not inside one exported window")));
    put(d, "read", with(1, 3, frame(mp::ids::read, pod_payload(0x1000, 64))));
    Bytes wr = pod_payload(0x1000, 8);
    wr.insert(wr.end(), 8, 'x');
    put(d, "write", with(2, 4, frame(mp::ids::write, wr)));
    Bytes wins;
    append(wins, std::uint32_t{2});
    append(wins, mp::WindowDesc{0x1000, 0x4000, 3, 1});
    append(wins, mp::WindowDesc{~0ull - 10, 100, 1, 0});
    put(d, "windows_reply", with(4, 5, frame(mp::ids::windows, wins)));
    Bytes many = hello_frame();
    Bytes e = error_frame(71, "");
    Bytes r = frame(mp::ids::read, pod_payload(1, 2));
    many.insert(many.end(), e.begin(), e.end());
    many.insert(many.end(), r.begin(), r.end());
    put(d, "three_frames", with(3, 6, many));
    Bytes trunc = hello_frame();
    trunc.resize(trunc.size() - 3);
    put(d, "hello_truncated", with(3, 7, trunc));
  }

  // ---- fuzz_agent_stream ----
  {
    const fs::path d = root / "fuzz_agent_stream";
    const std::uint64_t w = shmkit::fuzz::kWindowAddress, len = 4096 * shmkit::fuzz::kWindowPages;
    auto session = [&](std::uint8_t mode, const std::vector<Bytes>& frames) {
      Bytes b{mode};
      Bytes h = hello_frame();
      b.insert(b.end(), h.begin(), h.end());
      for (auto& f : frames) b.insert(b.end(), f.begin(), f.end());
      return b;
    };
    Bytes wr = pod_payload(w + 100, 16);
    wr.insert(wr.end(), 16, 'w');
    Bytes wr_edge = pod_payload(w + len - 8, 8);
    wr_edge.insert(wr_edge.end(), 8, 'e');
    for (std::uint8_t mode : {0, 1, 2, 3}) {
      std::string m = std::to_string(mode);
      put(d, "windows_m" + m, session(mode, {frame(mp::ids::windows, {})}));
      put(d, "read_m" + m, session(mode, {frame(mp::ids::read, pod_payload(w, 256))}));
      put(d, "read_whole_m" + m, session(mode, {frame(mp::ids::read, pod_payload(w, len))}));
      put(d, "write_m" + m, session(mode, {frame(mp::ids::write, wr), frame(mp::ids::read, pod_payload(w + 100, 16))}));
      put(d, "write_edge_m" + m, session(mode, {frame(mp::ids::write, wr_edge)}));
    }
    put(d, "read_past_end", session(3, {frame(mp::ids::read, pod_payload(w + len - 8, 16))}));
    put(d, "read_before", session(3, {frame(mp::ids::read, pod_payload(w - 8, 16))}));
    put(d, "read_wrap", session(3, {frame(mp::ids::read, pod_payload(~0ull - 4, 16))}));
    put(d, "unknown_id", session(3, {frame(77, {}), frame(mp::ids::windows, {})}));
    Bytes partial = frame(mp::ids::write, pod_payload(w, 4096));  // data never comes
    put(d, "write_data_missing", session(3, {partial}));
    put(d, "no_hello", Bytes{3, 32, 0, 0, 0, 17, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0});
  }
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
