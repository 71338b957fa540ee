// System calls only tests make, kept out of the library's syscall layer (sys/): giving up
// ptrace-ability or the user id to make process_vm_readv refuse, and a memory file that cannot be
// spliced. Same convention as sys/: the kernel's result or -errno.
#pragma once

#include <sys/types.h>

namespace shmkit::testing {

// prctl(PR_SET_DUMPABLE): a process that is not dumpable refuses process_vm_readv from others.
[[nodiscard]] int set_dumpable(bool on) noexcept;
[[nodiscard]] int setresuid(uid_t r, uid_t e, uid_t s) noexcept;
[[nodiscard]] int setresgid(gid_t r, gid_t e, gid_t s) noexcept;

// memfd_secret(2): a memory file the kernel keeps out of its own direct map; it cannot be spliced
// (splice says EINVAL). fd or -errno (-ENOSYS when the kernel was booted without secretmem).
[[nodiscard]] int memfd_secret(unsigned flags) noexcept;

}  // namespace shmkit::testing
