/// shmkit's one error model.
///
///  * Set-up and administrative calls (create/open a segment, construct a heap, connect a
///    transport, parse a command line) throw shmkit::Error: an Errc that code can branch on, the
///    errno that caused it (0 when none did) and a message a person can act on ("segment /orders:
///    base 0x200000000000 is taken by [heap] in this process; pass Relocate::allowed ...").
///  * Hot paths (lock, allocate, push/pop, transport requests) are noexcept and return a status
///    value: an enum, or -errno from the syscall layer. A dead lock owner is its own result value
///    (LockResult::owner_died), never an exception.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <string_view>

namespace shmkit {

enum class Errc {
  ok = 0,
  invalid_argument,   // a caller passed something malformed (a bad name, size, option)
  not_found,          // no such segment / named object / handler
  already_exists,     // create-exclusive of something that exists
  not_a_segment,      // the file is not a shmkit segment (magic, size, header fields)
  version_mismatch,   // a shmkit segment of another layout version
  corrupt,            // a shared structure failed validation
  address_in_use,     // the fixed base address is occupied in this process
  out_of_memory,      // the segment or heap cannot satisfy a request within its capacity
  owner_dead,         // the creator or lock owner died leaving state to repair
  not_recoverable,    // state left unrepaired by a dead owner; cannot be used any more
  timed_out,          // a bounded wait ran out
  permission_denied,  // the kernel or an exported window refused access
  peer_closed,        // the other end of a transport or channel went away
  protocol,           // a malformed or unexpected message
  unsupported,        // the kernel or peer lacks the feature (io_uring, an id, a message size)
  system,             // any other failed system call (see sys_errno())
  bad_magic,          // the memory given does not hold the object asked for (a Queue, a Channel):
                      // its magic number is another's or none (not_a_segment is for segment files)
};

std::string_view to_string(Errc) noexcept;

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message, int sys_errno = 0);
  Errc code() const noexcept { return code_; }
  int sys_errno() const noexcept { return sys_errno_; }

 private:
  Errc code_;
  int sys_errno_;
};

/// Maps an errno value to the Errc it most likely means (ENOENT -> not_found, ...).
Errc errc_from_errno(int err) noexcept;

/// Throws Error{errc_from_errno(err), what + ": " + strerror(err), err}.
[[noreturn]] void throw_errno(const std::string& what, int err);

namespace sys {
/// Set-up helper for the syscall layer's results: returns r when r >= 0, else throws
/// shmkit::Error naming `what` and the errno (-r).
long check(long r, const std::string& what);
}  // namespace sys

}  // namespace shmkit
