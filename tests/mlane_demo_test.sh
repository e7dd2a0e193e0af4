#!/usr/bin/env bash
# End to end: run `mlane demo --mount DIR` for a few seconds, read the debug
# view from outside the process with ordinary tools (ls, cat, hexdump), send
# SIGINT, and check that the demo exited 0 and left no mount behind.
# A watchdog aborts the FUSE connection (and kills the demo) if anything
# hangs, so the test fails instead of hanging.
set -uo pipefail
mlane=$1
tmp=${TEST_TMPDIR:-$(mktemp -d)}
mnt=$(mktemp -d "$tmp/mlane-mnt-XXXXXX")
log="$tmp/demo.log"
fail() { echo "FAIL: $*" >&2; cat "$log" >&2 2>/dev/null; exit 1; }

"$mlane" demo --seconds 120 --mount "$mnt" --quiet --slow-mb 16 --entities 2000 >"$log" 2>&1 &
pid=$!

conn=""
watchdog() {
  sleep 60
  echo "watchdog: aborting the FUSE connection" >&2
  [ -n "$conn" ] && [ -w "/sys/fs/fuse/connections/$conn/abort" ] && echo 1 >"/sys/fs/fuse/connections/$conn/abort"
  for c in /sys/fs/fuse/connections/*/abort; do :; done
  kill -9 "$pid" 2>/dev/null
}
watchdog & wd=$!
trap 'kill $wd 2>/dev/null; kill -9 $pid 2>/dev/null; umount "$mnt" 2>/dev/null' EXIT

# Wait for the view to appear.
for _ in $(seq 100); do
  [ -f "$mnt/arena/stats" ] && break
  kill -0 "$pid" 2>/dev/null || fail "the demo exited early"
  sleep 0.1
done
[ -f "$mnt/arena/stats" ] || fail "the view did not appear"
conn=$(mountpoint -d "$mnt" | cut -d: -f2)

sleep 3  # let the workload run: handles, groups, tags, cold assets

# (Listings go to variables first: with pipefail, `ls | grep -q` fails when
# grep stops reading early.)
top=$(ls "$mnt" | sort | tr '\n' ' ')
[ "$top" = "arena events groups handles lanes paging tags " ] || fail "top level: $top"
handles=$(ls "$mnt/handles")
n=$(printf '%s\n' "$handles" | wc -l)
[ "$n" -gt 100 ] || fail "only $n handles listed"
grep -q -- '^-' <<<"$handles" || fail "no SlowLane (negative) IDs"
grep -q '^handles_live ' "$mnt/arena/stats" || fail "arena/stats"
grep -q '^engine ' "$mnt/paging/stats" || fail "paging/stats"
grep -q '^capacity ' "$mnt/lanes/slow/stats" || fail "lanes/slow/stats"
map=$(cat "$mnt/lanes/fast/map") || fail "lanes/fast/map"
[ -n "$map" ] || fail "empty lanes/fast/map"
groups=$(ls "$mnt/groups")
grep -q '^level-' <<<"$groups" || fail "no level groups"
tags=$(ls "$mnt/tags")
grep -qE 'texture|mesh|audio|script' <<<"$tags" || fail "no tags"
last=$(tail -n 5 "$mnt/events" | wc -l)
[ "$last" -eq 5 ] || fail "tail of events: $last lines"
grep -qE ' (alloc|free) ' "$mnt/events" || fail "no alloc/free events"
# A handle's files, read with ordinary tools.
members=$(ls "$mnt/groups/"level-*)
id=$(grep -E -- '^-?[0-9]+$' <<<"$members" | sed -n 1p)
[ -n "$id" ] || fail "empty level group"
st=$(cat "$mnt/handles/$id/state") || fail "state of $id"
case "$st" in fast|slow|compressed|evicted) ;; *) fail "state '$st'" ;; esac
grep -q '^size ' "$mnt/handles/$id/info" || fail "info of $id"
size=$(awk '$1=="size" {print $2}' "$mnt/handles/$id/info")
got=$(wc -c <"$mnt/handles/$id/data") || fail "data of $id"
[ "$got" = "$size" ] || fail "data of $id: $got bytes, size $size"
hexdump -C -s 1000 -n 64 "$mnt/handles/$id/data" >/dev/null || fail "hexdump"
echo "read the view: $n handles, handle $id is $st, $size bytes"

kill -INT "$pid"
wait "$pid"
rc=$?
kill $wd 2>/dev/null
[ "$rc" -eq 0 ] || fail "demo exited $rc after SIGINT"
grep -q "0 corrupt" "$log" || fail "the demo found corrupt objects"
if grep -q " $mnt " /proc/self/mounts; then fail "stale mount left at $mnt"; fi
echo "PASS"
