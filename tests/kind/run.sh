#!/usr/bin/env bash
# The end-to-end scenario on a kind cluster, with a real kubelet:
#
#   build the images (tests/kind/Dockerfile) -> create a kind cluster -> load
#   the images -> root key Secret -> helm install charts/signet -> admin from
#   a bootstrap token (kubectl exec) -> admin -> agent identity for the operator
#   -> project, secret, EnrollmentToken, SecretGrant -> checks:
#     * a pod that did not opt in is not mutated;
#     * an opted-in pod naming a missing EnrollmentToken is refused;
#     * an opted-in pod starts with signet-init injected and its app container
#       reads the secret file;
#     * a new secret version reaches the file (sidecar refresh);
#     * deleting the pod revokes its machine in the vault;
#     * with the webhook scaled to zero, pods that did not opt in are still
#       admitted and opted-in ones are refused;
#     * deleting the EnrollmentToken revokes the token in the vault;
#   -> delete the cluster.
#
# Needs docker (with a running engine), kind, cargo (for the `signet` CLI),
# jq and curl; kubectl and helm come from PATH or tests/control-plane/build.sh.
# Without a Docker engine or kind it prints "skipped: ..." and exits 0: the
# scenario is never faked.
#
# Environment: SIGNET_KIND_CLUSTER (default signet-e2e), SIGNET_KIND_KEEP=1
# keeps the cluster afterwards, SIGNET_KIND_NODE_IMAGE (kind's default when
# unset), SIGNET_KIND_PORT (local port-forward port, default 18200).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/tests/kind
CLUSTER=${SIGNET_KIND_CLUSTER:-signet-e2e}
PORT=${SIGNET_KIND_PORT:-18200}
NS=signet-system
APP=signet-e2e-app
TAG=e2e

log() { printf '[kind] %s\n' "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }
skip() { echo "skipped: no Docker engine / kind not found ($*)"; exit 0; }

# --- prerequisites: skip (exit 0) only for the missing engine or kind --------
command -v docker >/dev/null 2>&1 || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "docker is installed but 'docker info' fails: no running engine"
command -v kind >/dev/null 2>&1 || skip "kind is not installed"

for tool in cargo jq curl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is required"
done
if command -v kubectl >/dev/null 2>&1 && command -v helm >/dev/null 2>&1; then
  KUBECTL=$(command -v kubectl)
  HELM=$(command -v helm)
else
  BIN=${SIGNET_CP_BIN:-$("$ROOT/tests/control-plane/build.sh" | tail -n1)}
  KUBECTL=$BIN/kubectl
  HELM=$BIN/helm
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/signet-kind.XXXXXX")
export KUBECONFIG=$WORK/kubeconfig
PF_PID=
cluster_created=false
cleanup() {
  local status=$?
  if [[ -n $PF_PID ]]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [[ $status -ne 0 && $cluster_created == true ]]; then
    log "diagnostics:"
    k get pods -A -o wide >&2 || true
    k -n "$NS" logs statefulset/signet-vault --tail=50 >&2 || true
    k -n "$NS" logs deployment/signet-controller --tail=50 >&2 || true
    k -n "$NS" logs deployment/signet-webhook --tail=50 >&2 || true
    k -n "$APP" describe pod app >&2 || true
  fi
  if [[ $cluster_created == true && ${SIGNET_KIND_KEEP:-0} != 1 ]]; then
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT

k() { "$KUBECTL" "$@"; }
signet() { "$SIGNET_CLI" "$@"; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND once a second.
wait_for() {
  local what=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [[ $SECONDS -lt $deadline ]] || die "timed out waiting for $what"
    sleep 1
  done
  log "ok: $what"
}

# --- images and CLI -----------------------------------------------------------
log "building images (tests/kind/Dockerfile)"
for target in vault operator init; do
  DOCKER_BUILDKIT=1 docker build -f "$HERE/Dockerfile" --target "$target" \
    -t "signet-$target:$TAG" "$ROOT"
done
log "building the signet CLI"
cargo build --release --locked -p signet-client --bin signet --manifest-path "$ROOT/Cargo.toml"
SIGNET_CLI=$ROOT/target/release/signet

# --- cluster ------------------------------------------------------------------
log "creating kind cluster $CLUSTER"
node_image=()
if [[ -n ${SIGNET_KIND_NODE_IMAGE:-} ]]; then node_image=(--image "$SIGNET_KIND_NODE_IMAGE"); fi
cluster_created=true
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 180s "${node_image[@]}"
kind load docker-image --name "$CLUSTER" "signet-vault:$TAG" "signet-operator:$TAG" "signet-init:$TAG"

# --- install --------------------------------------------------------------------
k apply --server-side -f "$ROOT/crds"
for ns in "$NS" "$APP"; do
  k create namespace "$ns"
  k label namespace "$ns" pod-security.kubernetes.io/enforce=restricted
done
docker run --rm "signet-vault:$TAG" root-key >"$WORK/root-key"
k -n "$NS" create secret generic signet-root-key --from-file=root-key="$WORK/root-key"
rm -f "$WORK/root-key"
"$HELM" install signet "$ROOT/charts/signet" -n "$NS" -f "$HERE/values.yaml"
k -n "$NS" rollout status statefulset/signet-vault --timeout=180s
k -n "$NS" rollout status deployment/signet-webhook --timeout=180s

# --- bootstrap: admin, then the operator's agent identity ------------------------
vault_log=$(k -n "$NS" logs signet-vault-0 -c vault)
grep -q '/data/bootstrap-token' <<<"$vault_log" || die "the vault's first-start log does not name its bootstrap token file"
! grep -q 'bt_' <<<"$vault_log" || die "a bootstrap token is in the vault's log"
log "ok: the first-start log names the bootstrap token's file, not the token"
token=$(k -n "$NS" exec signet-vault-0 -c vault -- signet-vault bootstrap-token --data-dir /data | tr -d '[:space:]')
[[ -n $token ]] || die "signet-vault bootstrap-token printed nothing"
log "ok: kubectl exec ... signet-vault bootstrap-token works"

k -n "$NS" port-forward svc/signet-vault "$PORT:8200" >"$WORK/port-forward.log" 2>&1 &
PF_PID=$!
wait_for "port-forward to the vault" 30 curl -fsS "http://127.0.0.1:$PORT/readyz"
export SIGNET_VAULT=http://127.0.0.1:$PORT
signet admin enroll --token-stdin --out "$WORK/admin.json" <<<"$token"
export SIGNET_IDENTITY=$WORK/admin.json
signet project create demo
signet secret set demo/db-password --value "first-$RANDOM"
signet keygen --out "$WORK/identity.json" >/dev/null
signet agent create --name signet-operator --key-file "$WORK/identity.json" \
  --scope metadata --scope tokens --scope grants --scope machines >/dev/null
agent_id=$(jq -r .id "$WORK/identity.json")
k -n "$NS" create secret generic signet-operator-identity --from-file=identity.json="$WORK/identity.json"
rm -f "$WORK/identity.json"
# Pods enroll by attestation: the vault reviews their projected tokens with
# this cluster's TokenReview API (as its own ServiceAccount), and the operator
# may hand out only what is delegated to it, per namespace.
k -n "$NS" get configmap kube-root-ca.crt -o jsonpath='{.data.ca\.crt}' >"$WORK/cluster-ca.crt"
signet cluster add kubernetes --api-url https://kubernetes.default.svc --ca-file "$WORK/cluster-ca.crt" >/dev/null
signet delegation add --agent "$agent_id" --project demo --secret db-password \
  --cluster kubernetes --namespace "$APP" >/dev/null
k -n "$NS" rollout status deployment/signet-controller --timeout=180s

# --- the scenario -------------------------------------------------------------------
k -n "$APP" apply -f "$HERE/manifests/grant.yaml"
k -n "$APP" wait --for=condition=Ready enrollmenttoken/demo --timeout=120s
k -n "$APP" wait --for=condition=Ready secretgrant/demo --timeout=120s

k -n "$APP" apply -f "$HERE/manifests/pod-plain.yaml"
[[ $(k -n "$APP" get pod plain -o json | jq '[(.spec.initContainers // [])[] | select(.name == "signet-init")] | length') == 0 ]] ||
  die "a pod that did not opt in was mutated"
log "ok: pod without the label is untouched"

if out=$(k -n "$APP" apply -f "$HERE/manifests/pod-missing-token.yaml" 2>&1); then
  die "a pod naming a missing EnrollmentToken was admitted"
fi
grep -q 'does not exist' <<<"$out" || die "unexpected refusal message: $out"
log "ok: missing EnrollmentToken refused: $out"

k -n "$APP" apply -f "$HERE/manifests/pod.yaml"
[[ $(k -n "$APP" get pod app -o jsonpath='{.metadata.annotations.signet\.dev/injected}') == true ]] ||
  die "the opted-in pod was not mutated"
k -n "$APP" wait --for=condition=Ready pod/app --timeout=180s
file=/var/run/secrets/signet/db-password
value=$(k -n "$APP" exec app -c app -- cat "$file")
[[ $value == first-* ]] || die "app read '$value' from $file"
log "ok: the app container reads $file"

signet secret set demo/db-password --value "second-$RANDOM"
file_is_second() { [[ $(k -n "$APP" exec app -c app -- cat "$file") == second-* ]]; }
wait_for "the new version in the pod's file" 90 file_is_second

machines_of_pod() {
  signet --json machine list |
    jq --arg name "$APP-app" '[.machines[] | select(.name == $name and (.disabled | not))] | length'
}
[[ $(machines_of_pod) == 1 ]] || die "expected one live machine named $APP-app"
k -n "$APP" delete pod app --wait=true --timeout=120s
no_live_machine() { [[ $(machines_of_pod) == 0 ]]; }
wait_for "the pod's machine revoked after the pod was deleted" 90 no_live_machine

k -n "$NS" scale deployment/signet-webhook --replicas=0
webhook_gone() { [[ -z $(k -n "$NS" get pods -l app.kubernetes.io/component=webhook -o name) ]]; }
wait_for "the webhook pod gone" 120 webhook_gone
k -n "$APP" delete pod plain --wait=true --timeout=120s
k -n "$APP" apply -f "$HERE/manifests/pod-plain.yaml" || die "webhook down blocked a pod that did not opt in"
if k -n "$APP" apply -f "$HERE/manifests/pod.yaml" >/dev/null 2>&1; then
  die "an opted-in pod was admitted while the webhook was down"
fi
log "ok: webhook down: plain pods admitted, opted-in pods refused"
k -n "$NS" scale deployment/signet-webhook --replicas=1

token_id=$(k -n "$APP" get enrollmenttoken demo -o jsonpath='{.status.tokenId}')
[[ -n $token_id ]] || die "EnrollmentToken has no status.tokenId"
k -n "$APP" delete enrollmenttoken demo --wait=true --timeout=120s
token_revoked() {
  [[ $(signet --json token list |
    jq --arg id "$token_id" '[.tokens[] | select(.id == $id and (.revoked | not))] | length') == 0 ]]
}
wait_for "the vault token revoked after the EnrollmentToken was deleted" 60 token_revoked

echo "kind scenario passed"
