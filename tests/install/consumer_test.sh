#!/usr/bin/env bash
# An outside project built from README.md's "Use it in your project" section alone: installs the
# built tree with the section's `cmake --install` line, then builds the project whose CMakeLists.txt
# is the section's cmake block (with main.cpp from this folder) and runs its tests, which use the
# package's imported `shmkit` command target; then builds main.cpp with the section's pkg-config
# line and runs it. Only /opt/shmkit (the prefix) and shmkit-build (the build tree) are replaced.
set -euo pipefail
build=$1 src=$2 readme=$3
tmp=$(mktemp -d)
cleanup() {  # the segment the project's tests name, in case a test failed before removing it
  if [ -d "$tmp/myapp/build" ]; then
    for seg in $(ctest --test-dir "$tmp/myapp/build" -N -V 2>/dev/null | grep -o '/myapp-[A-Za-z0-9]*' | sort -u); do
      rm -f "/dev/shm$seg"
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# The section, up to the next "## " heading; then its blocks, numbered in order.
awk '/^## Use it in your project/ { on = 1; next } /^## / { on = 0 } on' "$readme" > "$tmp/section.md"
awk -v dir="$tmp" '
  /^```[a-z]+[ \t]*$/ { lang = substr($0, 4); n[lang]++; f = sprintf("%s/%s%d", dir, lang, n[lang]); inblk = 1; next }
  /^```/ && inblk { inblk = 0; close(f); next }
  inblk { print > f }
' "$tmp/section.md"
for f in sh1 cmake1 sh2 sh3; do
  [ -s "$tmp/$f" ] || { echo "README.md's 'Use it in your project' section lacks block $f"; exit 1; }
done
readme_cmd() {  # the README's command lines with the temporary prefix and this build tree
  sed -e "s|/opt/shmkit|$tmp/prefix|g" -e "s|shmkit-build|$build|g" "$1"
}

# 1. Install (the configure and build lines of the block are what this build tree already did).
grep '^cmake --install' "$tmp/sh1" > "$tmp/install.sh" || { echo "no cmake --install line"; exit 1; }
(cd "$tmp" && bash -e <(readme_cmd "$tmp/install.sh") > "$tmp/install.log")
test -f "$tmp/prefix/include/shmkit/shmkit.hpp"
test -x "$tmp/prefix/bin/shmkit"

# 2. The CMake project: find_package, link, and tests that run the imported shmkit command.
mkdir "$tmp/myapp"
cp "$tmp/cmake1" "$tmp/myapp/CMakeLists.txt"
cp "$src/main.cpp" "$tmp/myapp/main.cpp"
grep -q 'shmkit::shmkit_tool' "$tmp/myapp/CMakeLists.txt" || { echo "the cmake block does not use shmkit::shmkit_tool"; exit 1; }
if ! (cd "$tmp" && bash -e <(readme_cmd "$tmp/sh2")) > "$tmp/app.log" 2>&1; then
  cat "$tmp/app.log"; exit 1
fi
grep -q "tests passed" "$tmp/app.log" || { cat "$tmp/app.log"; echo "the project's tests did not run"; exit 1; }
grep -E "^ *[0-9]+/[0-9]+ Test" "$tmp/app.log"

# 3. pkg-config.
if ! (cd "$tmp/myapp" && bash -e <(readme_cmd "$tmp/sh3") && ./myapp) > "$tmp/pc.log" 2>&1; then
  cat "$tmp/pc.log"; exit 1
fi
echo "install test: the README's find_package project (with its shmkit command tests) and pkg-config build work"
