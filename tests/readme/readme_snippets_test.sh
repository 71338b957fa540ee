#!/usr/bin/env bash
# Compiles every ```cpp block of README.md as its own translation unit (with <shmkit/shmkit.hpp>
# and the standard headers it uses included first), so the API tour cannot drift from the code.
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v dir="$tmp" '
  /^```cpp[ \t]*$/ { n++; f = sprintf("%s/snippet%02d.cpp", dir, n); inblk = 1;
                     print "#include <shmkit/shmkit.hpp>\n#include <cstdio>\n#include <map>\n#include <string>\n#include <vector>" > f; next }
  /^```/ && inblk { inblk = 0; close(f); next }
  inblk { print >> f }
' "$src/README.md"
count=0
for f in "$tmp"/snippet*.cpp; do
  [ -e "$f" ] || { echo "README.md has no cpp snippets"; exit 1; }
  count=$((count + 1))
  if ! g++ -std=c++20 -fsyntax-only -Wall -Werror \
      -I"$src/include" -I"$src/sys/include" -I"$src/locks/include" -I"$src/shm/include" \
      -I"$src/heap/include" -I"$src/transport/remote/include" -I"$src/transport/channels/include" "$f" 2> "$f.err"; then
    echo "README snippet $(basename "$f") does not compile:"; cat -n "$f"; cat "$f.err"; exit 1
  fi
done
echo "readme: $count snippets compiled"
