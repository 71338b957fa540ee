#!/usr/bin/env bash
# The whole test suite: install missing packages, build (release preset), run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake --preset release
cmake --build --preset release -j"$(nproc)"
ctest --preset release
