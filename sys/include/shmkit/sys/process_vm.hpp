/// Another process's address space: process_vm_readv / process_vm_writev (allowed when this
/// process may ptrace the other: same user and dumpable, or CAP_SYS_PTRACE; Yama may restrict it).
/// Convention: memory.hpp's (noexcept, bytes moved or -errno, EINTR retried).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

namespace shmkit::sys {

[[nodiscard]] ssize_t process_vm_readv(pid_t pid, const iovec* local, unsigned long nlocal,
                                       const iovec* remote, unsigned long nremote) noexcept;
[[nodiscard]] ssize_t process_vm_writev(pid_t pid, const iovec* local, unsigned long nlocal,
                                        const iovec* remote, unsigned long nremote) noexcept;

}  // namespace shmkit::sys
