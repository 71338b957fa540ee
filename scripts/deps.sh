#!/usr/bin/env bash
# Installs the Debian packages shmkit needs, when any is missing (apt-get; needs root or sudo).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config doxygen libboost-dev liburing-dev libspdlog-dev libfmt-dev
      libgtest-dev libgmock-dev libbenchmark-dev
      python3-dev pybind11-dev python3-pytest python3-numpy)  # the Python module (python/)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
