#!/usr/bin/env bash
# tools/test.sh — the whole test suite (what CI runs, through .ci/run).
#
#   tools/test.sh           everything: plain, ASan+UBSan, TSan, install check
#   tools/test.sh --quick   plain suite only
#
# Installs missing Debian packages first (tools/setup.sh). Sanitizer builds
# use their own Bazel output bases so switching configurations does not
# throw away the plain build's cache.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
cd "$root"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

cache=${MEMORYLANE_CACHE:-$HOME/.cache/memorylane}
step() { printf '\n==== %s\n' "$*"; }

step "build everything (tools, benchmarks, libraries)"
"$root/tools/bazelw" build //...

step "tests"
"$root/tools/bazelw" test //tests/...

if [ $quick = 1 ]; then exit 0; fi

step "tests under AddressSanitizer + UndefinedBehaviorSanitizer"
bazel --output_base="$cache/asan" test --config=asan //tests/...

step "tests under ThreadSanitizer"
bazel --output_base="$cache/tsan" test --config=tsan //tests/...

step "install, then build the README example outside Bazel with pkg-config"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tools/install.sh "$tmp/prefix" >/dev/null
# The README's example program, extracted verbatim, must compile and run.
awk '/<!-- example:begin -->/{f=1;next} /<!-- example:end -->/{f=0} f' README.md |
  sed '/^```/d' > "$tmp/example.c"
test -s "$tmp/example.c"
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" cc -Wall -Werror "$tmp/example.c" -o "$tmp/example" \
  $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs memorylane)
"$tmp/example"
# The header is C99 too: the example, strict C99 and pedantic, compiles.
cc -std=c99 -pedantic -Wall -Werror -c "$tmp/example.c" -o "$tmp/example99.o" -I"$tmp/prefix/include"
# The same program linked with the archive, as a PIE (the compiler's default).
cc -Wall -Werror "$tmp/example.c" -o "$tmp/example-a" -I"$tmp/prefix/include" \
  "$tmp/prefix/lib/libmemorylane.a" -lzstd -luring -lpthread
"$tmp/example-a" >/dev/null
# ... and the archive inside a shared library of the program's own (its
# objects must be PIC for that, not only PIE).
printf '#include "memorylane/memorylane.h"\nint wrap(void) { return ml_arena_create(0, 0); }\n' > "$tmp/wrap.c"
cc -shared -fPIC -Wall -Werror "$tmp/wrap.c" -o "$tmp/libwrap.so" -I"$tmp/prefix/include" \
  -Wl,--whole-archive "$tmp/prefix/lib/libmemorylane.a" -Wl,--no-whole-archive -lzstd -luring -lpthread
nm -D --defined-only "$tmp/prefix/lib/libmemorylane.so" | awk '$2 ~ /[TDB]/ {print $3}' |
  grep -v '^ml_[a-z]' && { echo "libmemorylane.so exports non-API symbols" >&2; exit 1; } || true
# Versioned sonames, and a program with the debug view through its own
# pkg-config module: it must find both libraries where they were installed.
soversion=$(sed -n 's/.*return "\([0-9]*\.[0-9]*\)\.[0-9]*".*/\1/p' core/config.c | head -1)
readelf -d "$tmp/prefix/lib/libmemorylane.so" | grep -q "SONAME.*\[libmemorylane\.so\.$soversion\]"
readelf -d "$tmp/prefix/lib/libmemorylane_debugfs.so" | grep -q "SONAME.*\[libmemorylane_debugfs\.so\.$soversion\]"
readelf -d "$tmp/prefix/lib/libmemorylane_debugfs.so" | grep -q 'RUNPATH.*\[\$ORIGIN\]'
printf '#include <stdio.h>\n#include "memorylane/debugfs.h"\nint main(void) { return ml_debugfs_mountpoint(NULL) != NULL || printf("%%s\\n", ml_version()) < 0; }\n' > "$tmp/dbg.c"
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" cc -Wall -Werror "$tmp/dbg.c" -o "$tmp/dbg" \
  $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs memorylane-debugfs)
"$tmp/dbg" >/dev/null

# The README's stale-pointer example: silent as it is, stopped by
# AddressSanitizer under MEMORYLANE_DEBUG=moves, with the installed library.
awk '/<!-- stale-example:begin -->/{f=1;next} /<!-- stale-example:end -->/{f=0} f' README.md |
  sed '/^```/d' > "$tmp/stale.c"
PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" cc -g -fsanitize=address "$tmp/stale.c" -o "$tmp/stale" \
  $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs memorylane)
"$tmp/stale" | grep -qx "kept too long"
if MEMORYLANE_DEBUG=moves "$tmp/stale" > "$tmp/stale.out" 2>&1; then
  echo "the stale pointer went unnoticed under MEMORYLANE_DEBUG=moves" >&2; exit 1
fi
grep -q "use-after-poison" "$tmp/stale.out" || { cat "$tmp/stale.out" >&2; exit 1; }

step "demo smoke run"
tools/mlane demo --seconds 2 --quiet
# The demo keeps the pointer rules: with every relocation point moving what
# it handed out, and old places poisoned, it still verifies every object.
MEMORYLANE_DEBUG=moves tools/mlane demo --seconds 2 --quiet

echo
echo "all tests passed"
