#!/bin/bash
# spin-ag.sh AUTOGROUP_NICE POLICY NICE: spin.py in an autogroup of that nice (run it under setsid)
echo $1 > /proc/self/autogroup
exec python3 spin.py $2 $3 0 11 2
