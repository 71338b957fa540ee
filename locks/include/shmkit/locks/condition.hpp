/// shmkit::Condition lives in lock.hpp beside Lock and RLock (it reaches into their robust core);
/// this header exists so that <shmkit/locks/condition.hpp> works as one would expect.
#pragma once
#include "shmkit/locks/lock.hpp"
