#!/usr/bin/env python3
"""Instructions per request of `gocommerce all`, counted by valgrind's callgrind.

Wall-clock figures on a shared two-core VM move by 10% between runs; the
instructions a request costs do not. This starts `gocommerce all` under
callgrind twice (the product cache on, then off), creates one product,
sends the same `GET /v1/products/{id}` a few thousand times over eight
keep-alive connections, and prints the user-space instructions each
component's thread spent per request. The kernel's share (system calls,
wake-ups) is not counted: pair it with `make bench` for time.

usage: scripts/instructions.py BINARY [--requests N] [--keep-dumps DIR]

With --keep-dumps the callgrind files stay in DIR for callgrind_annotate.
"""

import argparse
import glob
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SERVICES = ["auth", "user", "product", "order", "payment", "notification"]
COMPONENTS = ["gateway"] + SERVICES
ADMIN_EMAIL = "admin@gocommerce.local"
ADMIN_PASSWORD = "instructions-admin"
CONNECTIONS = 8
WARM_UP = 400


def environment(gateway_port, admin_port, run_id, cache):
    env = dict(os.environ)
    for svc in SERVICES:
        env[f"{svc.upper()}_DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/gcins_{svc}"
        env[f"{svc.upper()}_GRPC_ADDR"] = "127.0.0.1:0"
    env.update(
        GATEWAY_ADDR=f"127.0.0.1:{gateway_port}",
        ADMIN_ADDR=f"127.0.0.1:{admin_port}",
        GOCOMMERCE_ADMIN_EMAIL=ADMIN_EMAIL,
        GOCOMMERCE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        GATEWAY_AUTH_RATE_PER_MINUTE="100000000",
        AMQP_NAMESPACE=f"instructions_{run_id}.",
        AMQP_QUEUE_EXPIRES_SECONDS="600",
        SHUTDOWN_GRACE_SECONDS="2",
        RUST_LOG="warn",
    )
    if not cache:
        env["PRODUCT_CACHE_TTL_MS"] = "0"
    return env


def call(port, method, path, body=None, token=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    connection.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = connection.getresponse()
    payload = response.read()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {payload[:200]!r}")
    return json.loads(payload) if payload else None


def wait_ready(gateway_port, process, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gocommerce exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/readyz", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    sys.exit("gocommerce was not ready in time")


def product(port, run_id):
    token = call(port, "POST", "/v1/auth/login", {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})[
        "access_token"
    ]
    category = call(port, "POST", "/v1/categories", {"name": f"Books {run_id}", "slug": f"books-{run_id}"}, token)
    created = call(
        port,
        "POST",
        "/v1/products",
        {
            "sku": f"INS-{run_id}",
            "name": "The Analytical Engine",
            "description": "Notes on a machine that weaves algebraic patterns",
            "price": {"amount": 2599, "currency": "USD"},
            "category_id": category["id"],
            "stock": 10,
        },
        token,
    )
    return created["id"]


def load(port, path, total):
    """`total` GETs over CONNECTIONS keep-alive connections; every one must be a 200."""
    failures = []

    def run(count):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(count):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                failures.append(response.status)

    threads = [threading.Thread(target=run, args=(total // CONNECTIONS,)) for _ in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit(f"{len(failures)} of {total} requests failed, e.g. {failures[:3]}")
    return total // CONNECTIONS * CONNECTIONS


def free_ports(count):
    """Ports free now, distinct because they are held together while asked for."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def callgrind_control(pid, *args):
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def per_thread(prefix):
    """(component, instructions) of each thread that ran any, from callgrind's dumps.

    callgrind numbers threads, it does not name them; a thread is the
    component whose crate's functions it ran (the platform crate is shared).
    """
    threads = []
    for path in glob.glob(f"{prefix}.*"):
        with open(path, encoding="utf-8", errors="replace") as dump:
            text = dump.read()
        totals = re.search(r"^totals:\s*(\d+)", text, re.M)
        if not totals or int(totals.group(1)) == 0:
            continue
        seen = {c: text.count(f"gocommerce_{c}::") for c in COMPONENTS}
        name = max(seen, key=seen.get) if max(seen.values()) > 0 else "other"
        threads.append((name, int(totals.group(1))))
    return threads


def measure(binary, requests, cache, workdir):
    run_id = f"{os.getpid()}-{'cache' if cache else 'nocache'}"
    gateway_port, admin_port = free_ports(2)
    prefix = os.path.join(workdir, f"callgrind-{run_id}")
    log = open(os.path.join(workdir, f"{run_id}.log"), "w")
    process = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={prefix}",
            binary,
            "all",
        ],
        env=environment(gateway_port, admin_port, run_id, cache),
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        wait_ready(gateway_port, process)
        path = f"/v1/products/{product(gateway_port, run_id)}"
        load(gateway_port, path, WARM_UP)
        callgrind_control(process.pid, "--instr=on")
        load(gateway_port, path, WARM_UP)
        callgrind_control(process.pid, "--zero")
        sent = load(gateway_port, path, requests)
        callgrind_control(process.pid, "--dump")
        # callgrind writes the files after the command returns, one thread's
        # at a time: wait until a second's poll finds the same complete set.
        deadline = time.monotonic() + 120
        threads, previous = [], None
        while time.monotonic() < deadline and not (threads and threads == previous):
            time.sleep(1)
            threads, previous = sorted(per_thread(prefix)), threads
        if not threads:
            sys.exit("callgrind wrote no counts")
        return sent, threads
    finally:
        process.terminate()
        process.wait(timeout=120)
        log.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", help="the gocommerce binary (a release build with line tables)")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--keep-dumps", metavar="DIR", help="keep callgrind's files in DIR")
    args = parser.parse_args()
    print(f"{args.binary}: user-space instructions per GET /v1/products/{{id}}")
    print("| view | component | instructions per request |")
    print("|---|---|---|")
    try:
        with tempfile.TemporaryDirectory(prefix="gocommerce-instructions-") as scratch:
            workdir = args.keep_dumps or scratch
            os.makedirs(workdir, exist_ok=True)
            for cache in (True, False):
                sent, threads = measure(args.binary, args.requests, cache, workdir)
                view = "cached" if cache else "from the database"
                by_component = {}
                for name, instructions in threads:
                    by_component[name] = by_component.get(name, 0) + instructions
                for name, instructions in sorted(by_component.items(), key=lambda item: -item[1]):
                    if instructions / sent >= 100:
                        print(f"| {view} | {name} | {instructions / sent:,.0f} |")
                print(f"| {view} | all | {sum(by_component.values()) / sent:,.0f} |")
    finally:
        here = os.path.dirname(os.path.abspath(__file__))
        subprocess.run([os.path.join(here, "drop-test-databases.sh"), "gcins\\_%"], check=False)


if __name__ == "__main__":
    main()
