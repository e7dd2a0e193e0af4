#!/usr/bin/env bash
# tools/install.sh PREFIX — install MemoryLane for programs built outside Bazel:
#   PREFIX/include/memorylane/*.h
#   PREFIX/lib/libmemorylane.a
#   PREFIX/lib/libmemorylane.so -> libmemorylane.so.0.7 -> libmemorylane.so.0.7.0
#   PREFIX/lib/libmemorylane_debugfs.so (the FUSE debug view: -lmemorylane_debugfs,
#     or pkg-config memorylane-debugfs), versioned the same way
#   PREFIX/lib/pkgconfig/memorylane.pc, memorylane-debugfs.pc
# (Before 1.0 a minor version may change the API: the soname carries it.)
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
"$root/tools/setup.sh" --lib   # what building the library needs, not the tests' or benchmarks'
mkdir -p "$1"
prefix=$(cd "$1" && pwd)
cd "$root"

# The libraries that make up //:memorylane (one archive per module).
libs=(//core:core //paging:paging)
"$root/tools/bazelw" build --config=opt //:libmemorylane.so //:libmemorylane_debugfs.so "${libs[@]}" >/dev/null 2>&1 || \
  "$root/tools/bazelw" build --config=opt //:libmemorylane.so //:libmemorylane_debugfs.so "${libs[@]}"
bin=$("$root/tools/bazelw" info --config=opt bazel-bin 2>/dev/null)

mkdir -p "$prefix/include/memorylane" "$prefix/lib/pkgconfig"
install -m 0644 include/memorylane/*.h "$prefix/include/memorylane/"
version=$(sed -n 's/.*return "\([0-9.]*\)".*/\1/p' core/config.c | head -1)
soversion=${version%.*}  # MAJOR.MINOR
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Bazel links the debug view with a search path into its own output tree
# first; installed, it finds libmemorylane beside itself only. (On a copy:
# a failure leaves nothing half installed.)
cp "$bin/libmemorylane_debugfs.so" "$tmp/libmemorylane_debugfs.so"
chmod u+w "$tmp/libmemorylane_debugfs.so"
chrpath -r '$ORIGIN' "$tmp/libmemorylane_debugfs.so" >/dev/null
for lib in libmemorylane libmemorylane_debugfs; do
  src="$bin/$lib.so"
  [ "$lib" = libmemorylane_debugfs ] && src="$tmp/$lib.so"
  install -m 0755 "$src" "$prefix/lib/$lib.so.$version"
  ln -sf "$lib.so.$version" "$prefix/lib/$lib.so.$soversion"
  ln -sf "$lib.so.$soversion" "$prefix/lib/$lib.so"
done

# One static archive from the modules' position-independent archives
# (alwayslink archives are .lo; the .pic ones are what the .so was linked
# from), so that the archive can also go into a shared library of the
# program's own (the other objects are only PIE code: fine in a program,
# refused in a shared library).
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

# pkg-config splits its output at blanks: a prefix that has some is escaped.
pcprefix=${prefix// /\\ }
cat > "$prefix/lib/pkgconfig/memorylane.pc" <<PC
prefix=$pcprefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: memorylane
Description: Memory behind stable, generation-checked handles: lanes, compaction, paging
Version: $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lmemorylane
Libs.private: -lpthread -lzstd -luring
Cflags: -I\${includedir}
PC
# Shared library only (no archive of the debug view): no static flags.
cat > "$prefix/lib/pkgconfig/memorylane-debugfs.pc" <<PC
prefix=$pcprefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: memorylane-debugfs
Description: MemoryLane's debug view: a live heap as a FUSE filesystem
Version: $version
Requires: memorylane = $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -lmemorylane_debugfs
Cflags: -I\${includedir}
PC
echo "installed MemoryLane $version under $prefix"
