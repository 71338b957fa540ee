/// Former home of yield_cpu(), now in cpu.hpp with the other CPU calls. Kept so that existing
/// includes build; include cpu.hpp instead.
#pragma once

#include "shmkit/sys/cpu.hpp"
