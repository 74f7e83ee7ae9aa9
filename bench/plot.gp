# plot.gp: draws bench/run.sh's tables. Called as
#   gnuplot -e "outdir='DIR'" bench/plot.gp
# with DIR holding throughput.dat, large.dat (a header row of peer names,
# then one row per workload) and lat-PEER.dat (sorted round-trip latencies
# with their cumulative fraction).

set terminal pngcairo size 960,540 font "sans,11"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key top left autotitle columnheader
set grid ytics
set xtics nomirror
set ytics nomirror

set output outdir."/throughput.png"
set title "Throughput, 64-byte messages (higher is better)"
set ylabel "messages per second (log scale)"
set logscale y
plot for [i=2:6] outdir."/throughput.dat" using i:xtic(1)
unset logscale y

set output outdir."/large.png"
set title "Large messages (higher is better)"
set ylabel "MB/s"
set yrange [0:*]
plot for [i=2:6] outdir."/large.dat" using i:xtic(1)
set yrange [*:*]

set output outdir."/latency.png"
set style data lines
set title "Round trip latency distribution, 64-byte messages (last of the runs of each broker)"
set xlabel "round trip (µs, log scale)"
set ylabel "fraction of round trips at or below"
set logscale x
set key bottom right noautotitle
set yrange [0:1]
peers = "chand redis nats beanstalkd relay"
plot for [p in peers] outdir."/lat-".p.".dat" using 1:2 with lines lw 2 title p
