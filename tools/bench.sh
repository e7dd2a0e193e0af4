#!/usr/bin/env bash
# tools/bench.sh [--quick] [mlane_bench options...]
# Run the whole benchmark suite (--config=opt) and regenerate the charts:
#   docs/bench/results.{json,csv}   the figures, with the machine they ran on
#   docs/bench/*.svg                the charts the README shows
# --quick: smaller workloads, about a minute; its results go to
#   ${TMPDIR:-/tmp}/mlane-bench-quick, not over the full run's in docs/bench.
# MLANE_BENCH_OUT=DIR writes them to DIR instead. Installs missing packages first.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh"
cd "$root"
bazel build --config=opt //tools/bench:mlane_bench >/dev/null 2>"$root/.bench-build.log" || {
  cat "$root/.bench-build.log" >&2
  exit 1
}
rm -f "$root/.bench-build.log"
bin="$(bazel info --config=opt bazel-bin 2>/dev/null)/tools/bench/mlane_bench"
default_out=$root/docs/bench
for a in "$@"; do
  [[ $a == --quick ]] && default_out=${TMPDIR:-/tmp}/mlane-bench-quick
done
out=${MLANE_BENCH_OUT:-$default_out}
mkdir -p "$out"
"$bin" "$@" --json "$out/results.json" --csv "$out/results.csv"
tools/bench/plot.sh "$out/results.csv" "$out"
echo "results: $out/results.json, $out/results.csv, charts in $out" >&2
