#include "shmkit/sys/process_vm.hpp"

#include <cerrno>

#include "retry.hpp"

namespace shmkit::sys {
using detail::retry;

ssize_t process_vm_readv(pid_t pid, const iovec* local, unsigned long nlocal, const iovec* remote,
                         unsigned long nremote) noexcept {
  return retry([&] { return ::process_vm_readv(pid, local, nlocal, remote, nremote, 0); });
}
ssize_t process_vm_writev(pid_t pid, const iovec* local, unsigned long nlocal, const iovec* remote,
                          unsigned long nremote) noexcept {
  return retry([&] { return ::process_vm_writev(pid, local, nlocal, remote, nremote, 0); });
}

}  // namespace shmkit::sys
