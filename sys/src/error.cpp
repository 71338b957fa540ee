#include "shmkit/sys/error.hpp"

#include <cstring>

namespace shmkit {

std::string_view to_string(Errc e) noexcept {
  switch (e) {
    case Errc::ok: return "ok";
    case Errc::invalid_argument: return "invalid argument";
    case Errc::not_found: return "not found";
    case Errc::already_exists: return "already exists";
    case Errc::not_a_segment: return "not a shmkit segment";
    case Errc::version_mismatch: return "layout version mismatch";
    case Errc::corrupt: return "corrupt";
    case Errc::address_in_use: return "address in use";
    case Errc::out_of_memory: return "out of memory";
    case Errc::owner_dead: return "owner died";
    case Errc::not_recoverable: return "not recoverable";
    case Errc::timed_out: return "timed out";
    case Errc::permission_denied: return "permission denied";
    case Errc::peer_closed: return "peer closed";
    case Errc::protocol: return "protocol error";
    case Errc::unsupported: return "unsupported";
    case Errc::system: return "system error";
    case Errc::bad_magic: return "bad magic (not the object expected)";
  }
  return "unknown error";
}

Error::Error(Errc code, const std::string& message, int sys_errno)
    : std::runtime_error(message), code_(code), sys_errno_(sys_errno) {}

Errc errc_from_errno(int err) noexcept {
  switch (err) {
    case 0: return Errc::ok;
    case ENOENT: return Errc::not_found;
    case EEXIST: return Errc::already_exists;
    case EINVAL: case ENAMETOOLONG: return Errc::invalid_argument;
    case EACCES: case EPERM: return Errc::permission_denied;
    case ENOMEM: case ENOSPC: case EFBIG: return Errc::out_of_memory;
    case ETIMEDOUT: return Errc::timed_out;
    case EPIPE: case ECONNRESET: case ENOTCONN: return Errc::peer_closed;
    case EOWNERDEAD: return Errc::owner_dead;
    case ENOTRECOVERABLE: return Errc::not_recoverable;
    case ENOSYS: case EOPNOTSUPP: return Errc::unsupported;
    case EPROTO: case EBADMSG: return Errc::protocol;
    default: return Errc::system;
  }
}

void throw_errno(const std::string& what, int err) {
  throw Error(errc_from_errno(err), what + ": " + std::strerror(err), err);
}

long sys::check(long r, const std::string& what) {
  if (r < 0) throw_errno(what, static_cast<int>(-r));
  return r;
}

}  // namespace shmkit
