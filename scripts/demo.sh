#!/usr/bin/env bash
# The demo: install missing packages, build, then run the producer/consumer example (several
# producer and consumer processes, checksummed messages, exactly-once delivery checked) and the
# two-process fixed-address demo.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cmake --preset release
cmake --build --preset release -j"$(nproc)" --target shmkit_producer_consumer shmkit_demo shmkit_tool
./build/release/examples/producer_consumer/shmkit_producer_consumer
./build/release/examples/shmkit_demo
