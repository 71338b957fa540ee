// Hostile segments, ownership and mode: segments are created 0600 unless a mode is asked for
// (whatever the umask), and a segment file owned by another user is refused unless
// SegmentOptions::allow_other_owner (the check compares the file's st_uid with geteuid(); the
// test runs as root, so it chowns the file to another uid — root could open it anyway, the check
// is shmkit's own). A refused open names the owner and the option in its message. The check is
// the same on every way in: adopt() of a descriptor and receive_from() of one sent by a process
// of another user refuse it too, unless allowed (issue 14 item 5).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <string>

#include "shmkit/shm/segment.hpp"
#include "shmkit/sys/error.hpp"
#include "shmkit/sys/stream_io.hpp"
#include "test_syscalls.hpp"
#include "testing.hpp"

namespace shmkit {
namespace {

using testing::ShmNameGuard;

mode_t file_mode(const std::string& name) {
  struct ::stat st {};
  EXPECT_EQ(::stat(("/dev/shm" + name).c_str(), &st), 0);
  return st.st_mode & 07777;
}

// Restores the umask on scope exit.
struct UmaskGuard {
  mode_t old;
  explicit UmaskGuard(mode_t m) : old(::umask(m)) {}
  ~UmaskGuard() { ::umask(old); }
};

TEST(HostileOwnership, CreatedSegmentsAre0600ByDefaultWhateverTheUmask) {
  UmaskGuard um(0);  // a permissive umask must not widen the default
  ShmNameGuard name(testing::unique_name("own-mode"));
  SegmentOptions o;
  o.attach = false;
  Segment s = Segment::create(name.name(), 1 << 20, o);
  EXPECT_EQ(file_mode(name.name()), 0600u);
}

TEST(HostileOwnership, OpenOrCreateAlsoUses0600) {
  UmaskGuard um(0);
  ShmNameGuard name(testing::unique_name("own-ooc"));
  SegmentOptions o;
  o.attach = false;
  Segment s = Segment::open_or_create(name.name(), 1 << 20, o);
  EXPECT_EQ(file_mode(name.name()), 0600u);
}

TEST(HostileOwnership, AnAskedModeIsTheModeWhateverTheUmask) {
  UmaskGuard um(077);  // a restrictive umask must not narrow an explicit mode
  ShmNameGuard name(testing::unique_name("own-asked"));
  SegmentOptions o;
  o.attach = false;
  o.mode = 0640;
  Segment s = Segment::create(name.name(), 1 << 20, o);
  EXPECT_EQ(file_mode(name.name()), 0640u);
}

TEST(HostileOwnership, ASegmentOwnedByAnotherUserIsRefusedUnlessAllowed) {
  ASSERT_EQ(::geteuid(), 0u) << "this test chowns a file: it needs root";
  ShmNameGuard name(testing::unique_name("own-other"));
  {
    SegmentOptions o;
    o.attach = false;
    Segment s = Segment::create(name.name(), 1 << 20, o);
  }
  const uid_t other = 54321;
  ASSERT_EQ(::chown(("/dev/shm" + name.name()).c_str(), other, other), 0);
  try {
    Segment s = Segment::open(name.name());
    FAIL() << "opened a segment owned by uid " << other;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::permission_denied) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(other)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("allow_other_owner"), std::string::npos) << e.what();
  }
  // open_or_create of an existing foreign file: refused the same way (no re-initialisation).
  EXPECT_THROW((void)Segment::open_or_create(name.name(), 1 << 20), Error);
  SegmentOptions allow;
  allow.allow_other_owner = true;
  allow.attach = false;
  Segment s = Segment::open(name.name(), allow);
  EXPECT_TRUE(s.valid());
  EXPECT_GT(s.size(), 0u);
}

TEST(HostileOwnership, ToolsRefuseAForeignSegmentWithAOneLineError) {
  ShmNameGuard name(testing::unique_name("own-tool"));
  {
    SegmentOptions o;
    o.attach = false;
    Segment s = Segment::create(name.name(), 1 << 20, o);
  }
  ASSERT_EQ(::chown(("/dev/shm" + name.name()).c_str(), 54321, 54321), 0);
  for (const char* cmd : {"info", "verify"}) {
    auto r = testing::run_tool({cmd, name.name()});
    EXPECT_GT(r.exit_code, 0) << cmd;
    EXPECT_NE(r.err.find("54321"), std::string::npos) << cmd << ": " << r.err;
  }
}

void expect_refused_as_foreign(const std::function<void()>& open_it, uid_t owner) {
  try {
    open_it();
    ADD_FAILURE() << "accepted a segment owned by uid " << owner;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Errc::permission_denied) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::to_string(owner)), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("allow_other_owner"), std::string::npos) << e.what();
  }
}

TEST(HostileOwnership, AdoptAndReceiveFromAcceptAnotherUsersSegmentFile) {
  ASSERT_EQ(::geteuid(), 0u) << "this test runs a child as another user: it needs root";
  ShmNameGuard name(testing::unique_name("own-fd"));
  const uid_t other = 54321;
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  // A process of another user creates its segment and sends its descriptor.
  testing::Child sender([&] {
    ::close(sv[0]);
    if (testing::setresgid(other, other, other) != 0 || testing::setresuid(other, other, other) != 0) return 1;
    SegmentOptions o;
    o.attach = false;
    Segment s = Segment::create(name.name(), 1 << 20, o);
    s.send_to(sv[1]);
    s.send_to(sv[1]);
    char done;
    return ::read(sv[1], &done, 1) == 1 ? 0 : 2;
  });
  ::close(sv[1]);
  expect_refused_as_foreign([&] { (void)Segment::receive_from(sv[0]); }, other);
  // adopt() of the same kind of descriptor, opened here (root may open it; shmkit refuses).
  int fd = ::shm_open(name.c_str(), O_RDWR | O_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  expect_refused_as_foreign([&] { (void)Segment::adopt(fd); }, other);  // adopt closed fd
  SegmentOptions allow;
  allow.allow_other_owner = true;
  allow.attach = false;
  Segment s = Segment::receive_from(sv[0], allow);
  EXPECT_TRUE(s.valid());
  EXPECT_GT(s.size(), 0u);
  ASSERT_EQ(::write(sv[0], "x", 1), 1);
  EXPECT_EQ(sender.wait(), 0);
  ::close(sv[0]);
}

}  // namespace
}  // namespace shmkit
