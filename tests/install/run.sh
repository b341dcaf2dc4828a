#!/usr/bin/env bash
# Installs tendril from a build tree into a scratch prefix, then builds and runs a separate
# consumer project against it twice: with find_package(tendril) and with pkg-config.
#   tests/install/run.sh BUILD_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR}" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
test -x "$scratch/prefix/bin/tendril" || { echo "install: the tendril command is missing" >&2; exit 1; }
"$scratch/prefix/bin/tendril" version

cmake -S "$here/consumer" -B "$scratch/cmake-build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/cmake-build" >/dev/null
"$scratch/cmake-build/consumer"

export PKG_CONFIG_PATH="$scratch/prefix/lib/pkgconfig:$scratch/prefix/lib/x86_64-linux-gnu/pkgconfig"
g++ "$here/consumer/main.cpp" -o "$scratch/consumer-pc" $(pkg-config --cflags --libs tendril)
"$scratch/consumer-pc"
echo "install: find_package(tendril) and pkg-config both work"
