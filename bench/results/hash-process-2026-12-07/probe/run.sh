#!/bin/bash
# run.sh NAME POLICY NICE SLICE_NS   (or: run.sh NAME ag AUTOGROUP_NICE POLICY, or run.sh none none)
# pgbench's lookups (4 clients, 2,000 a second, for 8 s, in a session of
# their own) beside two spinning processes of spin.py in another session;
# prints the lookups' latency percentiles. Needs a database made with
# `pgbench -i -s 2 probe`. Run with nothing else busy.
name=$1; shift
cd "$(dirname "$0")"; rm -f pgbench_log.*
if [ "$1" = ag ]; then setsid ./spin-ag.sh "$2" "$3" "$4" 2>/dev/null & elif [ "$1" != none ]; then setsid python3 spin.py "$1" "$2" "$3" 11 2 2>/dev/null & fi
sleep 1
setsid pgbench -h 127.0.0.1 -U postgres -S -M prepared -c 4 -j 1 -R 2000 -T 8 -l probe > out.txt 2>&1
wait
python3 - "$name" <<'PY'
import glob, sys
lat = sorted(int(l.split()[2]) for f in glob.glob("pgbench_log.*") for l in open(f))
n = len(lat); q = lambda p: lat[min(n-1, int(p*n))]/1000
print(f"{sys.argv[1]:>22} n={n} p50={q(.5):.2f} p90={q(.9):.2f} p99={q(.99):.2f} max={lat[-1]/1000:.1f} ms")
PY
