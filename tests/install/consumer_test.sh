#!/usr/bin/env bash
# Installs the built tree into a temporary prefix, then builds and runs an outside project against
# it twice: with find_package(shmkit CONFIG) and with pkg-config. Also runs the installed command.
set -euo pipefail
build=$1 src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" > "$tmp/install.log"
test -f "$tmp/prefix/include/shmkit/shmkit.hpp"
cmake -S "$src" -B "$tmp/b" -G Ninja -DCMAKE_PREFIX_PATH="$tmp/prefix" > "$tmp/configure.log"
cmake --build "$tmp/b" > "$tmp/build.log"
"$tmp/b/consumer"
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --exists shmkit
g++ -O1 "$src/main.cpp" -o "$tmp/consumer_pc" \
  $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs shmkit)
"$tmp/consumer_pc"
"$tmp/prefix/bin/shmkit" --help > /dev/null
echo "install test: find_package and pkg-config consumers built and ran"
