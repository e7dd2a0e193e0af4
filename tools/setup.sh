#!/usr/bin/env bash
# tools/setup.sh — install what MemoryLane needs on Debian 12, if missing.
# Called by tools/mlane and tools/test.sh; safe to run again (does nothing
# when everything is there). Needs root or sudo only when it installs.
#   tools/setup.sh         everything: library, tests, benchmarks
#   tools/setup.sh --lib   only what building and installing the library
#                          needs (tools/install.sh)
set -euo pipefail

PKGS=(
  gcc g++ pkg-config ca-certificates
  bazel-bootstrap bazel-bootstrap-source   # Bazel 4.2 + offline rule repositories
  libzstd-dev liburing-dev                 # paging
  libfuse3-dev fuse3                       # debug view
  chrpath                                  # install.sh: the debug view's search path
)
if [ "${1:-}" != --lib ]; then
  PKGS+=(
    libgtest-dev libgmock-dev              # tests
    libjemalloc-dev libmimalloc-dev        # benchmark baselines
    librocksdb-dev gnuplot-nox             # store benchmark baseline, charts
    bsdextrautils util-linux               # hexdump, mountpoint (end-to-end test)
  )
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=()
  if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo); fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi
