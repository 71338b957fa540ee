#!/usr/bin/env bash
# The demo: install missing packages, build, run examples/demo (two processes, one segment).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake --preset release
cmake --build --preset release -j"$(nproc)" --target shmkit_demo shmkit_tool
./build/release/examples/shmkit_demo
