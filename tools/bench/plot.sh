#!/usr/bin/env bash
# tools/bench/plot.sh RESULTS.csv OUTDIR — charts from mlane_bench --csv output
# (gnuplot, from Debian's gnuplot-nox), as SVG:
#   OUTDIR/scaling_throughput.svg   ops/s against working set / budget, per system
#   OUTDIR/scaling_p99.svg          p99 latency against working set / budget
#   OUTDIR/store.svg                the 4x blob store: ops/s and memory per system
#   OUTDIR/ratios.svg               every measurement with a target: ratio vs target
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: tools/bench/plot.sh RESULTS.csv OUTDIR" >&2
  exit 2
fi
csv=$1
out=$2
mkdir -p "$out"
ext=${PLOT_FORMAT:-svg}
term=svg
[ "$ext" = png ] && term=pngcairo
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
command -v gnuplot >/dev/null || { echo "plot: gnuplot not installed (tools/setup.sh installs it)" >&2; exit 1; }

systems="memorylane rocksdb mmap+cgroup pread/pwrite"
# Scaling series: names like "4x memorylane ops/s" and "4x memorylane p99".
for metric in "ops/s" "p99"; do
  f="$tmp/scaling_${metric%%/*}.dat"
  printf 'factor' > "$f"
  for s in $systems; do printf ' "%s"' "$s" >> "$f"; done
  echo >> "$f"
  for x in 1 2 4 8; do
    printf '%s' "$x" >> "$f"
    for s in $systems; do
      v=$(awk -F, -v n="${x}x $s $metric" '$1=="scaling" && $2==n {print $3}' "$csv")
      printf ' %s' "${v:-NaN}" >> "$f"
    done
    echo >> "$f"
  done
done

awk -F, '$1=="store" && $2 ~ / ops\/s$/ {sub(/ ops\/s$/,"",$2); print "\"" $2 "\"", $3}' "$csv" > "$tmp/store_ops.dat"
awk -F, '$1=="store" && $2 ~ / peak RSS above program$/ {sub(/ peak RSS above program$/,"",$2); print "\"" $2 "\"", $3}' "$csv" > "$tmp/store_mem.dat"
budget=$(awk -F, '$1=="store" && $2=="memorylane memory vs budget" {print $6}' "$csv")
awk -F, 'NR>1 && $8 != "" {printf "\"%s: %s\" %s %s\n", $1, $2, $7, substr($8,3)}' "$csv" > "$tmp/ratios.dat"

machine=$(sed -n 's/.*"cpu": "\([^"]*\)".*/\1/p' "${csv%.csv}.json" 2>/dev/null | head -1 || true)
title_suffix=${machine:+ ($machine)}

gnuplot <<GP
set terminal $term size 800,480 font "sans,11" background rgb "white"
set key top right
set grid ytics
set style data linespoints

set output "$out/scaling_throughput.$ext"
set title "Blob store throughput as the working set grows$title_suffix"
set xlabel "working set / memory budget"
set ylabel "operations per second"
set logscale x 2
set logscale y
set xtics (1, 2, 4, 8)
set xrange [0.8:10]
set key autotitle columnheader
plot for [i=2:5] "$tmp/scaling_ops.dat" using 1:i lw 2

set output "$out/scaling_p99.$ext"
set title "Blob store p99 latency as the working set grows$title_suffix"
set ylabel "p99 latency (us)"
plot for [i=2:5] "$tmp/scaling_p99.dat" using 1:i lw 2

unset logscale
unset xlabel
set key noautotitle
set xtics autofreq
set autoscale x
set output "$out/store.$ext"
set title "Blob store, data = 4x budget: throughput and memory$title_suffix"
set style data histograms
set style fill solid 0.8 border -1
set boxwidth 0.8
set multiplot layout 1,2
set logscale y
set ylabel "operations per second"
set xtics rotate by -20
set title "throughput"
plot "$tmp/store_ops.dat" using 2:xtic(1) notitle lc rgb "#3070b0"
unset logscale
set ylabel "MiB resident above the program"
set title "memory (budget ${budget:-?} MiB)"
plot "$tmp/store_mem.dat" using 2:xtic(1) notitle lc rgb "#b05030", ${budget:-0} title "budget" with lines lw 2 lc rgb "black"
unset multiplot

set output "$out/ratios.$ext"
set terminal $term size 900,520 font "sans,10" background rgb "white"
set title "Micro-benchmarks: measured ratio (bars) and target (dots)$title_suffix"
set style data histograms
set xtics rotate by -35 font "sans,8"
set ylabel "ratio to baseline"
set logscale y
plot "$tmp/ratios.dat" using 2:xtic(1) title "ratio" lc rgb "#3070b0", \
     "" using 0:3 with points pt 7 ps 1 lc rgb "black" title "target"
GP
echo "charts written to $out"
