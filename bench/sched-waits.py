#!/usr/bin/env python3
"""Which threads waited on a runqueue, and what held the core meanwhile.

Reads `perf sched timehist` output and, for the request path's threads
(PostgreSQL backends, gocommerce's gateway and product threads, the load
generator's tokio workers, pgbench), counts the switch-ins that came after
waiting longer than a threshold, split by whether gocommerce's `argon2-N`
hashing threads were running nearby, and says which threads ran on that core
while they waited. Used for bench/HISTORY.md's entry "why catalog reads slow
down beside logins":

    perf sched record -a -o sched.data -- \
        $CARGO_TARGET_DIR/release/gocommerce-bench --gocommerce ... --quick --only 2,4
    perf sched timehist -i sched.data > sched.txt
    python3 bench/sched-waits.py sched.txt [threshold-ms]
"""

import bisect
import collections
import re
import sys

REQUEST_PATH = {"gc-gateway", "gc-product", "postgres", "tokio-rt-worker", "pgbench"}
NEAR_HASH_S = 0.05


def kind(name):
    if name.startswith("argon2"):
        return "argon2"
    if name == "<idle>":
        return "idle"
    return name if name in REQUEST_PATH else "other"


def parse(path):
    """Each CPU's run intervals, and every wait (start, end, cpu, name, ms)."""
    runs = collections.defaultdict(list)
    waits = []
    with open(path) as lines:
        for line in lines:
            fields = line.split()
            if len(fields) < 6 or not re.match(r"^\d+\.\d+$", fields[0]):
                continue
            try:
                end = float(fields[0])
                cpu = int(fields[1].strip("[]"))
                _, delay_ms, run_ms = map(float, fields[-3:])
            except ValueError:
                continue
            name = re.sub(r"\[.*", "", fields[2])
            start = end - run_ms / 1e3
            runs[cpu].append((start, end, name))
            if delay_ms > 0:
                waits.append((start - delay_ms / 1e3, start, cpu, name, delay_ms))
    return runs, waits


def main():
    path = sys.argv[1]
    threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    runs, waits = parse(path)
    hashing = sorted((s, e) for cpu in runs for s, e, n in runs[cpu] if kind(n) == "argon2")
    # The times within NEAR_HASH_S of a hash, as disjoint spans in order.
    near = []
    for s, e in hashing:
        s, e = s - NEAR_HASH_S, e + NEAR_HASH_S
        if near and s <= near[-1][1]:
            near[-1][1] = max(near[-1][1], e)
        else:
            near.append([s, e])
    near_starts = [s for s, _ in near]

    def near_hash(t):
        i = bisect.bisect_right(near_starts, t) - 1
        return i >= 0 and t <= near[i][1]

    # A core's runs come in the order they ended and do not overlap.
    ends = {cpu: [e for _, e, _ in cpu_runs] for cpu, cpu_runs in runs.items()}

    def held(cpu, start, end):
        """Seconds each kind of thread ran on `cpu` between `start` and `end`."""
        out = collections.Counter()
        for s, e, n in runs[cpu][bisect.bisect_right(ends[cpu], start) :]:
            if s >= end:
                break
            out[kind(n)] += min(e, end) - max(s, start)
        return out

    switch_ins = collections.Counter()
    long_waits = collections.Counter()
    holders = collections.defaultdict(collections.Counter)
    behind_hash = []
    after_first_hash = 0
    first_hash = hashing[0][0] if hashing else float("inf")
    for start, end, cpu, name, delay in waits:
        if kind(name) not in REQUEST_PATH:
            continue
        phase = "hashing" if near_hash(start) else "no hash"
        switch_ins[phase] += 1
        if delay <= threshold:
            continue
        long_waits[phase] += 1
        holding = held(cpu, start, end)
        holders[phase].update(holding)
        if start >= first_hash:
            after_first_hash += 1
            if holding["argon2"] * 1e3 / delay >= 0.5:
                behind_hash.append((delay, name))

    for phase in ("no hash", "hashing"):
        n, k = switch_ins[phase], long_waits[phase]
        print(f"{phase}: {n} switch-ins of request-path threads, {k} after waiting > {threshold} ms "
              f"({1e6 * k / max(n, 1):.0f} per million)")
        total = sum(holders[phase].values())
        if total:
            shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in holders[phase].most_common())
            print(f"   the core meanwhile ran: {shares}")
    print(f"after the first hash: {after_first_hash} waits > {threshold} ms, {len(behind_hash)} of them "
          "with an argon2 thread on the core for at least half the wait")
    if behind_hash:
        delays = sorted(d for d, _ in behind_hash)
        print(f"   median {delays[len(delays) // 2]:.2f} ms, p90 {delays[int(len(delays) * 0.9)]:.2f} ms, "
              f"max {delays[-1]:.2f} ms")
        print("   by thread:", collections.Counter(n for _, n in behind_hash).most_common())


if __name__ == "__main__":
    main()
