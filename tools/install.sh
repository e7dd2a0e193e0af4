#!/usr/bin/env bash
# tools/install.sh PREFIX — install MemoryLane for programs built outside Bazel:
#   PREFIX/include/memorylane/*.h
#   PREFIX/lib/libmemorylane.a  PREFIX/lib/libmemorylane.so
#   PREFIX/lib/libmemorylane_debugfs.so (the FUSE debug view: -lmemorylane_debugfs)
#   PREFIX/lib/pkgconfig/memorylane.pc
# Then:  cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs memorylane)
# The archive instead of the shared library (its objects are position
# independent: for a PIE, the default, or a shared library of your own):
#   cc app.c -IPREFIX/include PREFIX/lib/libmemorylane.a -lzstd -luring -lpthread
# or a fully static program:
#   cc app.c -static $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --static --cflags --libs memorylane)
set -euo pipefail
if [ $# -ne 1 ] || [ "$1" = "--help" ]; then
  echo "usage: tools/install.sh PREFIX" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
cd "$root"

# The libraries that make up //:memorylane (one archive per module).
libs=(//core:core //paging:paging)
bazel build --config=opt //:libmemorylane.so //:libmemorylane_debugfs.so "${libs[@]}" >/dev/null 2>&1 || \
  bazel build --config=opt //:libmemorylane.so //:libmemorylane_debugfs.so "${libs[@]}"
bin=$(bazel info --config=opt bazel-bin 2>/dev/null)

mkdir -p "$prefix/include/memorylane" "$prefix/lib/pkgconfig"
install -m 0644 include/memorylane/*.h "$prefix/include/memorylane/"
install -m 0755 "$bin/libmemorylane.so" "$prefix/lib/libmemorylane.so"
install -m 0755 "$bin/libmemorylane_debugfs.so" "$prefix/lib/libmemorylane_debugfs.so"

# One static archive from the modules' position-independent archives
# (alwayslink archives are .lo; the .pic ones are what the .so was linked
# from), so that the archive can also go into a shared library of the
# program's own (the other objects are only PIE code: fine in a program,
# refused in a shared library).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{
  echo "create $tmp/libmemorylane.a"
  for l in "${libs[@]}"; do
    pkg=${l#//}; pkg=${pkg%%:*}; name=${l##*:}
    found=
    for f in "$bin/$pkg/lib$name.pic.lo" "$bin/$pkg/lib$name.pic.a"; do
      if [ -f "$f" ]; then echo "addlib $f"; found=1; break; fi
    done
    if [ -z "$found" ]; then echo "install.sh: no PIC archive for $l under $bin" >&2; exit 1; fi
  done
  echo "save"
  echo "end"
} | ar -M
install -m 0644 "$tmp/libmemorylane.a" "$prefix/lib/libmemorylane.a"

version=$(sed -n 's/.*return "\([0-9.]*\)".*/\1/p' core/config.c | head -1)
cat > "$prefix/lib/pkgconfig/memorylane.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: memorylane
Description: Memory behind stable, generation-checked handles: lanes, compaction, paging
Version: $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lmemorylane
Libs.private: -lpthread -lzstd -luring
Cflags: -I\${includedir}
PC
echo "installed MemoryLane $version under $prefix"
