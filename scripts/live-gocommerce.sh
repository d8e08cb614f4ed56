# Sourced, not run, by the scripts that test a live `gocommerce all`
# (schemathesis.sh, readme-walkthrough.sh).
#
# Reads:    bin (the binary), here (the repository)
# Defines:  run_id; free_port; start_gocommerce, which starts "$bin" on free
#           loopback ports with fresh databases and a RabbitMQ namespace of
#           its own, passes the caller's environment through (settings
#           exported before it apply), waits until it is ready and sets base
#           (the gateway's URL), log and pid; stop_gocommerce, for the
#           caller's EXIT trap, which stops it, drops its databases and
#           removes its log.

run_id="st_$(date +%s)_$$"
log=$(mktemp -t gocommerce-run.XXXXXX.log)
pid=

stop_gocommerce() {
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  "$here/scripts/drop-test-databases.sh" "gct_%_${run_id}" >/dev/null || true
  rm -f "$log"
}

# A free port below the kernel's ephemeral range, other than the arguments:
# a bind(0) port could meanwhile become the local port of one of the many
# connections gocommerce opens while starting, or of the readiness probe's
# own connect.
free_port() {
  python3 - "$@" <<'PY'
import random, socket, sys
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
taken = {int(p) for p in sys.argv[1:]}
for _ in range(1000):
    port = random.randrange(max(1024, low // 2), low)
    if port in taken:
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    sys.exit("no free port below the ephemeral range")
PY
}

start_gocommerce() {
  local gateway_port admin_port svc lower
  gateway_port=$(free_port)
  admin_port=$(free_port "$gateway_port")
  export GATEWAY_ADDR="127.0.0.1:${gateway_port}" ADMIN_ADDR="127.0.0.1:${admin_port}"
  for svc in AUTH USER PRODUCT ORDER PAYMENT NOTIFICATION; do
    lower=$(echo "$svc" | tr 'A-Z' 'a-z')
    export "${svc}_GRPC_ADDR=127.0.0.1:0"
    export "${svc}_DATABASE_URL=postgres://postgres@127.0.0.1:5432/gct_${lower}_${run_id}"
  done
  # Exchanges and queues of this run only, which RabbitMQ drops a minute
  # after it: a task left in a shared queue (a refund) reached the next run's
  # services, whose databases never heard of it, and was dead-lettered.
  export AMQP_NAMESPACE="$run_id" AMQP_QUEUE_EXPIRES_SECONDS=60
  export RUST_LOG="${RUST_LOG:-warn}"

  "$bin" all >"$log" 2>&1 &
  pid=$!
  base="http://127.0.0.1:${gateway_port}"
  for _ in $(seq 1 120); do
    if curl -fsS "$base/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then echo "gocommerce exited:"; cat "$log"; exit 1; fi
    sleep 0.5
  done
  echo "gocommerce never became ready:"
  cat "$log"
  exit 1
}
