# Throughput of every benchmark configuration, one panel per case.
# bench.py writes the data files (median of the runs) and calls:
#   gnuplot -e "outdir='DIR'" chart.gp
# A configuration that was not available has zero bars and "(n/a)".

if (!exists("outdir")) outdir = "out"

set terminal pngcairo size 1400,900 font "sans,10"
set output outdir."/throughput.png"
set style data histogram
set style histogram cluster gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0     # room for the value labels
set key top right

set multiplot layout 2,2 title "nbdkit-zoned benchmarks (medians; higher is better)"

set title "1: sequential 1 MiB, 16 in flight (file on tmpfs)"
set ylabel "MiB/s"
plot outdir."/seq.dat" using 2:xtic(1) title "write", \
     "" using 3 title "read", \
     "" using ($0-1/6.):2:(sprintf("%.0f",$2)) with labels offset 0,0.6 notitle, \
     "" using ($0+1/6.):3:(sprintf("%.0f",$3)) with labels offset 0,0.6 notitle

set title "2: QD1 1 MiB writes into one zone (emulated zoned)"
set ylabel "MiB/s"
plot outdir."/zoneqd1.dat" using 2:xtic(1) title "write", \
     "" using 0:2:(sprintf("%.0f",$2)) with labels offset 0,0.6 notitle

set title "3: 4 KiB random reads, 16 in flight"
set ylabel "thousand IOPS"
plot outdir."/randread.dat" using 2:xtic(1) title "read", \
     "" using 0:2:(sprintf("%.1f",$2)) with labels offset 0,0.6 notitle

set title "4: 64 KiB writes into one zone"
set ylabel "MiB/s"
plot outdir."/zone64k.dat" using 2:xtic(1) title "1 in flight", \
     "" using 3 title "8 in flight", \
     "" using ($0-1/6.):2:(sprintf("%.0f",$2)) with labels offset 0,0.6 notitle, \
     "" using ($0+1/6.):3:(sprintf("%.0f",$3)) with labels offset 0,0.6 notitle

unset multiplot
