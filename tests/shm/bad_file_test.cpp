// Tests that every kind of bad file yields a clear error and never a crash: not a shmkit segment
// (random bytes, too short, empty), another layout version, a truncated file, header fields out
// of range; and that open_or_create never overwrites a file that is not a shmkit segment.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <functional>
#include <random>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "testing.hpp"

using namespace shmkit;
using shmkit::testing::ShmNameGuard;
using shmkit::testing::unique_name;

namespace {

void write_file(const std::string& name, const std::vector<char>& bytes) {
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::write(fd, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
}

// A valid segment's file image, to be damaged by each test.
std::vector<char> valid_image() {
  ShmNameGuard n(unique_name("image"));
  Segment s = Segment::create(n.name(), 1 << 20);
  s.close();
  int fd = ::shm_open(n.c_str(), O_RDONLY, 0);
  std::vector<char> bytes(1 << 20);
  EXPECT_EQ(::pread(fd, bytes.data(), bytes.size(), 0), static_cast<ssize_t>(bytes.size()));
  ::close(fd);
  return bytes;
}

SegmentHeader& hdr(std::vector<char>& img) { return *reinterpret_cast<SegmentHeader*>(img.data()); }

void expect_open_error(const std::string& name, Errc code, const std::string& phrase) {
  SegmentOptions o;
  o.open_timeout = std::chrono::milliseconds(100);
  try {
    (void)Segment::open(name, o);
    ADD_FAILURE() << "opened a bad file; expected " << to_string(code);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    std::string msg = e.what();
    EXPECT_NE(msg.find(phrase), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error must be one line: " << msg;
  }
}

}  // namespace

TEST(BadFile, RandomBytes) {
  ShmNameGuard n(unique_name("random"));
  std::vector<char> bytes(1 << 16);
  std::mt19937 rng(1);
  for (auto& b : bytes) b = static_cast<char>(rng());
  write_file(n.name(), bytes);
  expect_open_error(n.name(), Errc::not_a_segment, "not a shmkit segment");
  // open_or_create must refuse too, and leave the file as it was.
  try {
    (void)Segment::open_or_create(n.name(), 1 << 20);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::not_a_segment);
  }
  int fd = ::shm_open(n.c_str(), O_RDONLY, 0);
  std::vector<char> after(bytes.size());
  EXPECT_EQ(::pread(fd, after.data(), after.size(), 0), static_cast<ssize_t>(after.size()));
  ::close(fd);
  EXPECT_EQ(after, bytes);
}

TEST(BadFile, TooShort) {
  ShmNameGuard n(unique_name("short"));
  write_file(n.name(), std::vector<char>(100, 'x'));
  expect_open_error(n.name(), Errc::not_a_segment, "too short");
}

TEST(BadFile, EmptyFile) {
  ShmNameGuard n(unique_name("empty"));
  write_file(n.name(), {});
  expect_open_error(n.name(), Errc::not_a_segment, "empty file");
}

TEST(BadFile, OtherLayoutVersion) {
  ShmNameGuard n(unique_name("version"));
  auto img = valid_image();
  hdr(img).version = 99;
  write_file(n.name(), img);
  expect_open_error(n.name(), Errc::version_mismatch, "layout version 99");
}

TEST(BadFile, Truncated) {
  ShmNameGuard n(unique_name("trunc"));
  auto img = valid_image();
  img.resize(img.size() / 2);
  write_file(n.name(), img);
  expect_open_error(n.name(), Errc::corrupt, "truncated");
}

TEST(BadFile, FieldsOutOfRange) {
  struct Case {
    const char* what;
    std::function<void(SegmentHeader&)> damage;
    const char* phrase;
  };
  std::vector<Case> cases = {
      {"capacity zero", [](SegmentHeader& h) { h.capacity = 0; }, "capacity field"},
      {"capacity huge", [](SegmentHeader& h) { h.capacity = 1ULL << 60; }, "capacity field"},
      {"size > capacity", [](SegmentHeader& h) { h.size.store(h.capacity + 4096); }, "size field"},
      {"size unaligned", [](SegmentHeader& h) { h.size.store((1 << 20) - 1); }, "size field"},
      {"size inside header", [](SegmentHeader& h) { h.size.store(4096); }, "size field"},
      {"base kernel half", [](SegmentHeader& h) { h.base = 0xffff800000000000ULL; }, "base field"},
      {"base null", [](SegmentHeader& h) { h.base = 0; }, "base field"},
      {"base unaligned", [](SegmentHeader& h) { h.base += 12; }, "base field"},
      {"header size", [](SegmentHeader& h) { h.header_size = 12; }, "header size"},
      {"state", [](SegmentHeader& h) { h.state.store(77); }, "state field"},
  };
  for (auto& c : cases) {
    SCOPED_TRACE(c.what);
    ShmNameGuard n(unique_name("field"));
    auto img = valid_image();
    c.damage(hdr(img));
    write_file(n.name(), img);
    expect_open_error(n.name(), Errc::corrupt, c.phrase);
  }
}

TEST(BadFile, FuzzedHeadersNeverCrash) {
  // Random damage to random header bytes: every open either succeeds or throws shmkit::Error.
  auto base_img = valid_image();
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    ShmNameGuard n(unique_name("fuzz"));
    auto img = base_img;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) img[rng() % 128] = static_cast<char>(rng());
    write_file(n.name(), img);
    SegmentOptions o;
    o.open_timeout = std::chrono::milliseconds(50);
    o.relocate = Relocate::allowed;
    try {
      Segment s = Segment::open(n.name(), o);
      EXPECT_LE(s.size(), s.capacity());
    } catch (const Error&) {
    }
  }
}
