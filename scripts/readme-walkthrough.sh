#!/usr/bin/env bash
# Runs the README's two walk-throughs (accounts and tokens, then shopping)
# as a reader pasting them into a shell would, against a fresh `gocommerce
# all` with the settings `make run` uses and an SMTP sink, then checks that
# each step did what the README says. Only the gateway's address changes
# (localhost:8080 becomes a free port). Needs curl and jq, as the README does.
# Usage: scripts/readme-walkthrough.sh PATH/TO/gocommerce PATH/TO/aiosmtpd
set -euo pipefail

bin=$1
aiosmtpd=$2
here=$(cd "$(dirname "$0")/.." && pwd)
command -v jq >/dev/null || { echo "the walk-through needs jq"; exit 1; }
# The bootstrap admin the README logs in as (the Makefile's, for `make run`).
export GOCOMMERCE_ADMIN_EMAIL=admin@gocommerce.local GOCOMMERCE_ADMIN_PASSWORD=change-me-admin

source "$here/scripts/live-gocommerce.sh"
smtp=
work=$(mktemp -d -t gocommerce-walkthrough.XXXXXX)
trap 'stop_gocommerce; if [[ -n $smtp ]]; then kill "$smtp" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
smtp_port=$(free_port)
"$aiosmtpd" -n -l "127.0.0.1:${smtp_port}" >"$work/smtp.log" 2>&1 &
smtp=$!
export SMTP_URL="smtp://127.0.0.1:${smtp_port}"
start_gocommerce

# The README's first ```sh block under each walk-through heading, with the
# gateway's address swapped in. /tmp/login.json and /tmp/refresh.json, which
# the README writes, go to this run's own directory.
python3 - "$here/README.md" "${base#http://}" "$work" >"$work/walkthrough.sh" <<'PY'
import re, sys
readme, address, work = sys.argv[1:4]
text = open(readme).read()
for heading in ("## Walk-through: accounts and tokens", "## Walk-through: shopping"):
    section = text[text.index(heading):]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    print(block.replace("localhost:8080", address).replace("/tmp/", work + "/"))
PY
source "$work/walkthrough.sh" >"$work/out.txt" 2>&1 || {
  echo "the walk-through stopped:"; cat "$work/out.txt"; exit 1
}

failures=0
check() { # what, then a command that must succeed
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then echo "ok   $what"; else echo "FAIL $what"; failures=$((failures + 1)); fi
}
said() { grep -qxF -- "$1" "$work/out.txt"; }
count() { grep -cF -- "$1" "$work/out.txt"; }
uuid() { [[ $1 =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]]; }
get() { curl -fsS "$base$1" -H "authorization: Bearer $2"; }
eventually() { # a command, tried every 0.25 s for up to 10 s
  local _
  for _ in $(seq 1 40); do
    if "$@"; then return 0; fi
    sleep 0.25
  done
  return 1
}

check "a reused refresh token and its successor are both refused" \
  test "$(count '"detail": "the refresh token is invalid, expired or revoked"')" -eq 2
check "logging out answers 204" said 204
check "the password change answered a new token pair" \
  eval "tr -d ' \n' <'$work/out.txt' | grep -qF '[\"access_token\",\"expires_in\",\"refresh_token\",\"token_type\"]'"
check "the token the password was changed with is refused" \
  said "\"the token's session has ended; log in again\""
check "only the new password logs in" eval "
  curl -fsS -o /dev/null -X POST '$base/v1/auth/login' -H 'content-type: application/json' \
    -d '{\"email\": \"ada@example.com\", \"password\": \"correct horse battery staple\"}' &&
  test \"\$(curl -s -o /dev/null -w '%{http_code}' -X POST '$base/v1/auth/login' -H 'content-type: application/json' \
    -d '{\"email\": \"ada@example.com\", \"password\": \"correct horse battery\"}')\" = 401"
check "the admin and the customer logged in" test "$ADMIN" != null -a "$ACCESS" != null
check "the category, product, address and order were created" \
  eval 'uuid "$CATEGORY" && uuid "$PRODUCT" && uuid "$ADDRESS" && uuid "$ORDER"'
check "the search finds the product" \
  eval "curl -fsS '$base/v1/products?q=analytical+engine&category=books' | jq -e '.items[0].id == \"$PRODUCT\"'"
check "the status stream showed the order paid" \
  eval "said 'event: status' && grep -qE '^data: .*\"status\":\"PAID\"' '$work/out.txt'"
check "the order was shipped and then delivered" \
  eval "said '\"SHIPPED\"' && said '\"DELIVERED\"'"
check "two copies are sold: 8 of 10 left" \
  eval "get /v1/products/$PRODUCT/stock $ADMIN | jq -e '.on_hand == 8 and .available == 8'"
# The refund and the emails follow through RabbitMQ, after the README's
# requests: each gets up to 10 s.
check "one copy is refunded" \
  eventually eval "get /v1/orders/$ORDER/payment $ACCESS | jq -e '.refunded_amount.amount == 2599'"
check "the order went through every state to partly refunded" \
  eval "get /v1/orders/$ORDER $ACCESS | jq -e '[.history[].to] == [\"PENDING\", \"RESERVED\", \"PAID\", \"SHIPPED\", \"DELIVERED\", \"PARTIALLY_REFUNDED\"]'"
for event in user.registered user.password_changed order.paid order.shipped order.delivered payment.refunded; do
  check "Ada was emailed about $event" \
    eventually eval "get /v1/notifications $ACCESS | jq -e 'any(.items[]; .event_type == \"$event\" and .channel == \"email\" and .status == \"sent\")'"
done
check "the SMTP server received the emails" \
  eval "test \"\$(grep -c '^---------- MESSAGE FOLLOWS' '$work/smtp.log')\" -ge 6"

if ((failures > 0)); then
  echo "the README's walk-through went wrong in $failures places; what it printed:"
  cat "$work/out.txt"
  exit 1
fi
echo "the README's walk-through works as written"
