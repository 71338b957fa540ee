#!/usr/bin/env bash
# The whole test suite: install missing packages, build, run every test.
#   scripts/test.sh            release build (RelWithDebInfo), every test
#   scripts/test.sh asan       AddressSanitizer + UndefinedBehaviorSanitizer build, every test
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
./scripts/deps.sh
cmake --preset "$preset"
cmake --build --preset "$preset" -j"$(nproc)"
ctest --preset "$preset"
