#!/usr/bin/env bash
# tools/bench.sh [--quick] [mlane_bench options...]
# Run the whole benchmark suite (--config=opt) and regenerate the charts:
#   docs/bench/results.{json,csv}   the figures, with the machine they ran on
#   docs/bench/*.svg                the charts the README shows
# Only a full run writes there: no options, or only --swap-dir DIR.
# --quick: smaller workloads, about a minute; its results go to
#   ${TMPDIR:-/tmp}/mlane-bench-quick, not over the full run's in docs/bench.
# Any other option (--filter, --reps, ...) runs part of the suite or runs it
#   differently; its results go to ${TMPDIR:-/tmp}/mlane-bench-partial.
# MLANE_BENCH_OUT=DIR writes them to DIR instead. Installs missing packages first.
# The results and charts are written only when the whole run succeeds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Where the results go, decided before anything is built or run.
quick=false partial=false help=false
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[i]} in
    --quick) quick=true ;;
    --swap-dir) i=$((i + 1)) ;; # where swap files go, not what runs
    --help | -h) help=true ;;
    --json | --csv)
      echo "bench.sh: ${args[i]}: bench.sh writes results.json and results.csv itself" \
        "(MLANE_BENCH_OUT=DIR to choose the directory)" >&2
      exit 2
      ;;
    *) partial=true ;;
  esac
done
if $partial; then
  default_out=${TMPDIR:-/tmp}/mlane-bench-partial
elif $quick; then
  default_out=${TMPDIR:-/tmp}/mlane-bench-quick
else
  default_out=$root/docs/bench
fi
out=${MLANE_BENCH_OUT:-$default_out}

"$root/tools/setup.sh"
cd "$root"
"$root/tools/bazelw" build --config=opt //tools/bench:mlane_bench >/dev/null 2>"$root/.bench-build.log" || {
  cat "$root/.bench-build.log" >&2
  exit 1
}
rm -f "$root/.bench-build.log"
bin="$("$root/tools/bazelw" info --config=opt bazel-bin 2>/dev/null)/tools/bench/mlane_bench"
if $help; then
  sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  echo
  exec "$bin" --help
fi
if [[ -z ${MLANE_BENCH_OUT:-} && $out != "$root/docs/bench" ]]; then
  echo "bench.sh: not a full run: results go to $out, not docs/bench" >&2
fi

# The run writes into a scratch directory; its files replace those in $out
# only once mlane_bench and the charts have succeeded, so a failed or
# interrupted run leaves $out as it was.
mkdir -p "$out"
stage=$(mktemp -d "$out/.bench-run.XXXXXX")
trap 'rm -rf "$stage"' EXIT
"$bin" "$@" --json "$stage/results.json" --csv "$stage/results.csv"
mkdir "$stage/charts"
if ! tools/bench/plot.sh "$stage/results.csv" "$stage/charts" >"$stage/plot.log" 2>&1; then
  if [[ $out == "$root/docs/bench" ]]; then
    cat "$stage/plot.log" >&2
    echo "bench.sh: the charts failed: nothing written to $out" >&2
    exit 1
  fi
  # A partial run may lack the series a chart needs: keep its results.
  mv -f "$stage/results.json" "$stage/results.csv" "$out/"
  echo "bench.sh: results: $out/results.json, $out/results.csv;" \
    "no charts drawn (tools/bench/plot.sh failed; any charts in $out are older)" >&2
  exit 0
fi
shopt -s nullglob
charts=("$stage/charts"/*)
mv -f "$stage/results.json" "$stage/results.csv" "${charts[@]}" "$out/"
echo "results: $out/results.json, $out/results.csv, charts in $out" >&2
