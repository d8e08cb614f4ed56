#!/usr/bin/env bash
# End-to-end suite of the operator against the current kube context (kind:
# `make kind-up images kind-load e2e-k8s`). It fails, never skips, when no
# cluster answers.
#
# Steps: install the chart, apply the minimal example, wait for Ready, register
# and log in through the gateway's node port, log out everywhere through one of
# two gateway replicas and see both refuse the token, scale, change the image, delete
# with deletionPolicy Retain (volumes and credentials stay) and with Delete
# (they go).
#
# Environment:
#   KUBECTL, HELM      tools (default: from PATH)
#   IMAGE              image under test, already loadable by the cluster
#   IMAGE_NEXT         a second tag of the same image for the rollout step
#                      (default: IMAGE retagged as :e2e-next and loaded into
#                      kind when docker and kind are available)
#   GATEWAY_URL        where the gateway node port 30080 answers
#                      (default http://127.0.0.1:8080, kind-config.yaml's mapping)
#   E2E_NAMESPACE      namespace of the test instances (default gocommerce-e2e)
#   E2E_KEEP=1         keep everything after the run, for debugging
set -euo pipefail

KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
IMAGE=${IMAGE:-ghcr.io/gocommerce/gocommerce:dev}
GATEWAY_URL=${GATEWAY_URL:-http://127.0.0.1:8080}
NS=${E2E_NAMESPACE:-gocommerce-e2e}
OPERATOR_NS=${OPERATOR_NAMESPACE:-gocommerce-system}
KIND_CLUSTER=${KIND_CLUSTER:-gocommerce}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
passed=0
failed=0
reached=0

log() { printf '\n== %s\n' "$*"; }
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() {
  failed=$((failed + 1))
  printf 'FAIL %s\n' "$*" >&2
  exit 1
}
k() { "$KUBECTL" -n "$NS" "$@"; }

diagnostics() {
  local status=$?
  if [[ $status -ne 0 && $reached == 1 ]]; then
    echo "--- diagnostics" >&2
    k get gocommerces,deployments,statefulsets,pods,pvc,svc -o wide >&2 || true
    k get gocommerces -o yaml >&2 || true
    k get events --sort-by=.lastTimestamp >&2 | tail -40 || true
    "$KUBECTL" -n "$OPERATOR_NS" logs deploy/gocommerce-gocommerce-operator --tail=100 >&2 || true
  fi
  if [[ $reached == 1 && "${E2E_KEEP:-0}" != 1 ]]; then
    "$KUBECTL" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  echo
  echo "e2e-k8s: $passed passed, $((failed + (status != 0 && failed == 0 ? 1 : 0))) failed"
  exit "$status"
}

# Polls CMD until it succeeds or TIMEOUT seconds pass.
eventually() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then fail "$what (after ${timeout}s)"; fi
    sleep 3
  done
  ok "$what"
}

instance_yaml() { # name file image
  bash "$ROOT/tests/e2e-k8s/with-image.sh" "$2" "$3" "$1"
}

set_image() { # instance image
  k patch gocommerce "$1" --type merge -p "{\"spec\":{\"image\":\"$2\",\"imagePullPolicy\":\"IfNotPresent\"}}"
}

ready() { # instance
  k wait "gocommerce/$1" --for=condition=Ready --timeout=900s
}

json_field() { # field: reads JSON on stdin
  python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('$1') or d.get('data',{}).get('$1') or '')"
}

trap diagnostics EXIT

log "cluster"
"$KUBECTL" version >/dev/null 2>&1 || fail "no cluster answers on the current kube context ($("$KUBECTL" config current-context 2>/dev/null || echo none))"
reached=1
ok "cluster reachable: $("$KUBECTL" config current-context)"

log "operator"
"$HELM" upgrade --install gocommerce "$ROOT/helm/gocommerce-operator" \
  --namespace "$OPERATOR_NS" --create-namespace \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" \
  --set image.pullPolicy=IfNotPresent --set replicaCount=2 --wait --timeout 5m
ok "chart installed with two replicas"
"$KUBECTL" get crd gocommerces.gocommerce.io >/dev/null || fail "CRD missing"
eventually 60 "one replica holds the lease" \
  bash -c "\"$KUBECTL\" -n $OPERATOR_NS get lease gocommerce-gocommerce-operator -o jsonpath='{.spec.holderIdentity}' | grep -q ."

log "schema refuses a bad spec"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
if printf 'apiVersion: gocommerce.io/v1alpha1\nkind: GoCommerce\nmetadata: {name: bad}\nspec: {postgres: {mode: sharded}}\n' | k apply -f - 2>/dev/null; then
  fail "an invalid mode was accepted"
fi
ok "invalid postgres.mode refused by kubectl apply"

log "minimal example (deletionPolicy Retain)"
instance_yaml shop "$ROOT/examples/gocommerce.yaml" "$IMAGE" | k apply -f -
ready shop
ok "shop is Ready"
[[ $(k get gocommerce shop -o jsonpath='{.status.gatewayNodePort}') == 30080 ]] || fail "gateway node port is not 30080"
ok "gateway on node port 30080"

log "REST through the gateway node port"
eventually 120 "GET /readyz" curl -fsS "$GATEWAY_URL/readyz"
email="e2e-$RANDOM$RANDOM@example.com"
password="correct-horse-battery-staple"
status=$(curl -sS -o /tmp/e2e-register.json -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\",\"name\":\"E2E\"}" "$GATEWAY_URL/v1/auth/register")
[[ $status == 200 || $status == 201 ]] || fail "register answered $status: $(cat /tmp/e2e-register.json)"
ok "register $email"
status=$(curl -sS -o /tmp/e2e-login.json -w '%{http_code}' -H 'content-type: application/json' \
  -d "{\"email\":\"$email\",\"password\":\"$password\"}" "$GATEWAY_URL/v1/auth/login")
[[ $status == 200 ]] || fail "login answered $status: $(cat /tmp/e2e-login.json)"
token=$(json_field access_token </tmp/e2e-login.json)
[[ -n $token ]] || token=$(json_field accessToken </tmp/e2e-login.json)
[[ -n $token ]] || fail "login returned no access token: $(cat /tmp/e2e-login.json)"
ok "login returns an access token"

log "an ended session's token is refused by every gateway replica"
k patch gocommerce shop --type merge -p '{"spec":{"gateway":{"replicas":2}}}'
eventually 300 "the gateway runs two ready replicas" \
  bash -c "[[ \$(\"$KUBECTL\" -n $NS get deploy shop-gateway -o jsonpath='{.status.readyReplicas}') == 2 ]]"
status=$(curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "$GATEWAY_URL/v1/auth/me")
[[ $status == 200 ]] || fail "GET /v1/auth/me answered $status before the logout"
status=$(curl -sS -o /dev/null -w '%{http_code}' -X POST -H "authorization: Bearer $token" "$GATEWAY_URL/v1/auth/logout-everywhere")
[[ $status == 200 ]] || fail "logout-everywhere answered $status"
# One replica ended the session; the other reads it within its poll (1 s).
# Each curl is a new connection, which the node port spreads over both.
sleep 3
for _ in $(seq 20); do
  status=$(curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer $token" "$GATEWAY_URL/v1/auth/me")
  [[ $status == 401 ]] || fail "a replica answered $status to the token of an ended session"
done
ok "both gateway replicas refuse the token of an ended session"
k patch gocommerce shop --type merge -p '{"spec":{"gateway":{"replicas":1}}}'

log "scale"
k patch gocommerce shop --type merge -p '{"spec":{"services":{"product":{"replicas":2}}}}'
eventually 300 "product runs two ready replicas" \
  bash -c "[[ \$(\"$KUBECTL\" -n $NS get deploy shop-product -o jsonpath='{.status.readyReplicas}') == 2 ]]"
eventually 60 "product has a PodDisruptionBudget" k get pdb shop-product
# Callers resolve the headless Service to every ready pod and spread their
# calls over them (a ClusterIP would pin each caller's connection to one).
eventually 60 "the headless Service lists both product pods" \
  bash -c "[[ \$(\"$KUBECTL\" -n $NS get endpointslices -l kubernetes.io/service-name=shop-product-pods -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{\"\\n\"}{end}' | sort -u | grep -c .) == 2 ]]"
for _ in $(seq 20); do
  status=$(curl -sS -o /dev/null -w '%{http_code}' "$GATEWAY_URL/v1/products?page_size=5")
  [[ $status == 200 ]] || fail "a catalog page answered $status with two product pods"
done
ok "catalog pages answered with two product pods"
k patch gocommerce shop --type merge -p '{"spec":{"services":{"product":{"replicas":1}}}}'
eventually 60 "the PodDisruptionBudget goes with the second replica" bash -c "! \"$KUBECTL\" -n $NS get pdb shop-product"

log "change image"
next=${IMAGE_NEXT:-}
if [[ -z $next ]]; then
  next="${IMAGE%:*}:e2e-next"
  command -v docker >/dev/null && command -v kind >/dev/null \
    || fail "set IMAGE_NEXT, or have docker and kind to retag $IMAGE"
  docker tag "$IMAGE" "$next"
  kind load docker-image "$next" --name "$KIND_CLUSTER" >/dev/null
fi
before=$(k get deploy shop-gateway -o jsonpath='{.spec.template.metadata.annotations.gocommerce\.io/config-hash}')
set_image shop "$next"
k rollout status deploy/shop-gateway --timeout=300s
[[ $(k get deploy shop-gateway -o jsonpath='{.spec.template.spec.containers[0].image}') == "$next" ]] || fail "gateway image not changed"
ok "gateway rolled to $next"
k patch gocommerce shop --type merge -p '{"spec":{"telemetry":{"logLevel":"debug"}}}'
eventually 60 "a config change changes the config hash" \
  bash -c "[[ \$(\"$KUBECTL\" -n $NS get deploy shop-gateway -o jsonpath='{.spec.template.metadata.annotations.gocommerce\.io/config-hash}') != '$before' ]]"
ready shop
ok "shop is Ready after the rollout"
eventually 120 "GET /readyz after the rollout" curl -fsS "$GATEWAY_URL/readyz"

log "delete with deletionPolicy Retain"
k delete gocommerce shop --wait --timeout=300s
ok "shop deleted"
pvcs=$(k get pvc -l app.kubernetes.io/instance=shop -o name | wc -l)
((pvcs == 7)) || fail "expected 7 retained volumes, found $pvcs"
ok "7 volumes retained"
owners=$(k get secret shop-jwt shop-pg-auth -o jsonpath='{.items[*].metadata.ownerReferences}')
[[ -z $owners ]] || fail "retained secrets still have owners: $owners"
ok "credentials retained without owner"
eventually 120 "workloads garbage-collected" bash -c "[[ -z \$(\"$KUBECTL\" -n $NS get deploy,sts -l app.kubernetes.io/instance=shop -o name) ]]"
k delete pvc -l app.kubernetes.io/instance=shop --wait=false >/dev/null
k delete secret -l app.kubernetes.io/instance=shop >/dev/null

log "shared example (deletionPolicy Delete)"
instance_yaml shop-shared "$ROOT/examples/gocommerce-shared.yaml" "$IMAGE" | k apply -f -
ready shop-shared
ok "shop-shared is Ready"
[[ $(k get sts -l app.kubernetes.io/instance=shop-shared -o name | wc -l) -eq 2 ]] || fail "shared mode runs one PostgreSQL and one RabbitMQ"
ok "one shared PostgreSQL"
k delete gocommerce shop-shared --wait --timeout=300s
eventually 300 "volumes deleted with the resource" \
  bash -c "[[ -z \$(\"$KUBECTL\" -n $NS get pvc -l app.kubernetes.io/instance=shop-shared -o name) ]]"
eventually 120 "generated secrets garbage-collected" \
  bash -c "[[ -z \$(\"$KUBECTL\" -n $NS get secret -l app.kubernetes.io/instance=shop-shared -o name) ]]"
