/// shmkit::RLock lives in lock.hpp beside Lock and Condition; this header exists so that
/// <shmkit/locks/rlock.hpp> works as one would expect.
#pragma once
#include "shmkit/locks/lock.hpp"
