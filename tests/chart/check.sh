#!/usr/bin/env bash
# Checks the Helm chart charts/signet:
#
#   - charts/signet/crds/ is identical to crds/ (the generated CRDs);
#   - values.schema.json closes every object (additionalProperties: false);
#   - helm lint (default values, and --strict with each tests/chart/values-*.yaml);
#   - renders that must fail do (missing required Secrets, unknown keys);
#   - helm template with each values file, validated by kubeconform -strict
#     against the Kubernetes 1.34 schemas prepared by tests/control-plane/build.sh,
#     plus a few policy assertions on the output (restricted pods, webhook
#     scoping, the vault bound to system:auth-delegator only, no Secrets access
#     for the controller unless operator.rawTokens, never serviceaccounts/token,
#     the rotation agent of values-rotator.yaml);
#   - with a kubeconfig (--kubeconfig FILE or $KUBECONFIG): kubectl apply
#     --dry-run=server of the CRDs and the rendered manifests (changes nothing);
#   - with --control-plane: starts a throw-away etcd + kube-apiserver
#     (tests/control-plane/start.sh), and there runs the dry-runs, a Pod
#     Security "restricted" check, a real `helm install`, what the vault
#     and the controller may do there (kubectl auth can-i), the example
#     EnrollmentToken/SecretGrant, the webhook's scoping (a pod that did not
#     opt in is admitted while the webhook is unreachable; an opted-in one is
#     refused), and `helm uninstall`; then stops it.
#
# Usage: bash tests/chart/check.sh [--control-plane] [--kubeconfig FILE]
# Tools come from $SIGNET_CP_BIN when set, else from tests/control-plane/build.sh.
# Exits non-zero when any check fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CHART=$ROOT/charts/signet
HERE=$ROOT/tests/chart
K8S_VERSION=1.34.4
# Kinds without a schema here (cert-manager's); everything else must validate.
SKIP_KINDS=Certificate,Issuer

control_plane=false
kubeconfig=${KUBECONFIG:-}
while [[ $# -gt 0 ]]; do
  case $1 in
    --control-plane) control_plane=true ;;
    --kubeconfig) kubeconfig=${2:?--kubeconfig needs a file}; shift ;;
    --kubeconfig=*) kubeconfig=${1#--kubeconfig=} ;;
    -h | --help) sed -n '2,26p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

failures=()
section() { printf '\n== %s\n' "$*"; }
pass() { printf '   ok    %s\n' "$*"; }
fail() { printf '   FAIL  %s\n' "$*" >&2; failures+=("$*"); }

# check DESCRIPTION COMMAND...: runs COMMAND, shows its output only on failure.
check() {
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then
    pass "$what"
  else
    fail "$what"
    printf '%s\n' "$out" | sed 's/^/         /' >&2
  fi
}

# must_fail DESCRIPTION EXPECTED_TEXT COMMAND...: COMMAND must fail and say EXPECTED_TEXT.
must_fail() {
  local what=$1 expected=$2 out
  shift 2
  if out=$("$@" 2>&1); then
    fail "$what (succeeded, expected a failure mentioning: $expected)"
  elif grep -qF -- "$expected" <<<"$out"; then
    pass "$what"
  else
    fail "$what (failed without mentioning: $expected)"
    printf '%s\n' "$out" | sed 's/^/         /' >&2
  fi
}

section "tools"
if [[ -n ${SIGNET_CP_BIN:-} ]]; then
  BIN=$SIGNET_CP_BIN
else
  echo "   building or reusing the control-plane tools (tests/control-plane/build.sh)"
  BIN=$("$ROOT/tests/control-plane/build.sh" | tail -n1)
fi
HELM=$BIN/helm
KUBECTL=$BIN/kubectl
KUBECONFORM=$BIN/kubeconform
SCHEMAS=$(cd "$BIN/.." && pwd)/schemas
for tool in "$HELM" "$KUBECTL" "$KUBECONFORM"; do
  [[ -x $tool ]] || { echo "missing tool: $tool" >&2; exit 1; }
done
[[ -d $SCHEMAS/v$K8S_VERSION-standalone-strict ]] || {
  echo "missing kubeconform schemas: $SCHEMAS/v$K8S_VERSION-standalone-strict" >&2
  exit 1
}
command -v jq >/dev/null || { echo "jq is required" >&2; exit 1; }
pass "$("$HELM" version --short), kubeconform $("$KUBECONFORM" -v), schemas in $SCHEMAS"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/signet-chart-check.XXXXXX")
CP_DIR=
cleanup() {
  if [[ -n $CP_DIR ]]; then
    "$ROOT/tests/control-plane/start.sh" stop "$CP_DIR" >/dev/null 2>&1 || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

section "CRDs"
check "charts/signet/crds is identical to crds (diff -r)" diff -r "$ROOT/crds" "$CHART/crds"

section "values.schema.json"
schema_closed() {
  jq -e '."$schema" == "http://json-schema.org/draft-07/schema#"' "$CHART/values.schema.json" >/dev/null || {
    echo "not a draft-07 schema"
    return 1
  }
  # Every object schema that lists properties must refuse others.
  local open
  open=$(jq -r '[paths(objects) as $p | select(getpath($p) | has("properties") and .additionalProperties != false)
                 | $p | map(tostring) | join("/")] | .[]' "$CHART/values.schema.json")
  [[ -z $open ]] || { echo "open objects: $open"; return 1; }
}
check "draft-07, additionalProperties false at every object level" schema_closed

section "helm lint"
check "helm lint (default values)" "$HELM" lint "$CHART"
VALUES_FILES=("$HERE"/values-*.yaml "$ROOT/tests/kind/values.yaml")
values_name() { # tests/chart/values-X.yaml -> X; tests/kind/values.yaml -> kind
  local name
  name=$(basename "$1" .yaml)
  if [[ $name == values ]]; then basename "$(dirname "$1")"; else echo "${name#values-}"; fi
}
for values in "${VALUES_FILES[@]}"; do
  check "helm lint --strict -f ${values#"$ROOT"/}" "$HELM" lint --strict "$CHART" -f "$values"
done

section "renders that must fail"
must_fail "no root key Secret named" "vault.rootKey.existingSecret is required" \
  "$HELM" template signet "$CHART"
must_fail "no vault TLS Secret and no cert-manager" "vault.tls.existingSecret is required" \
  "$HELM" template signet "$CHART" --set vault.rootKey.existingSecret=a --set operator.identity.existingSecret=b
must_fail "no operator identity Secret named" "operator.identity.existingSecret is required" \
  "$HELM" template signet "$CHART" --set vault.rootKey.existingSecret=a --set vault.tls.existingSecret=c
must_fail "unknown value key" "additional properties 'replicaCount' not allowed" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set vault.replicaCount=2
must_fail "two vault replicas on the single-writer store" "vault.replicas > 1 needs vault.database.existingSecret" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set vault.replicas=2
must_fail "webhook URL that is not HTTPS" "url" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set operator.webhook.url=http://127.0.0.1:8443/mutate
must_fail "webhook timeout above the API server's 30 s limit" "timeoutSeconds" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set operator.webhook.timeoutSeconds=31
must_fail "bad image pull policy" "pullPolicy" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set vault.image.pullPolicy=Sometimes
must_fail "cluster name the vault would refuse" "/cluster/name" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set cluster.name=Prod
must_fail "rotation agent without its identity Secret" "rotator.identity.existingSecret is required" \
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set rotator.enabled=true
must_fail "rotation agent claiming in a busy loop" "/rotator/interval" \
  "$HELM" template signet "$CHART" -f "$HERE/values-rotator.yaml" --set rotator.interval=0

section "helm template + kubeconform -strict (Kubernetes $K8S_VERSION schemas)"
render() { # NAME VALUES NAMESPACE
  "$HELM" template signet "$CHART" --include-crds -n "$3" -f "$2" >"$WORK/$1.yaml"
}
for values in "${VALUES_FILES[@]}"; do
  name=$(values_name "$values")
  if check "helm template -f ${values#"$ROOT"/}" render "$name" "$values" signet-system; then
    check "kubeconform $name" "$KUBECONFORM" -strict -summary \
      -kubernetes-version "$K8S_VERSION" -schema-location "$SCHEMAS" \
      -skip "$SKIP_KINDS" "$WORK/$name.yaml"
  fi
done

# Policy assertions on the default (required-values) render.
policy() {
  local file=$WORK/required.yaml images
  images=$(grep -c '^ *image: ' "$file")
  [[ $images -eq 3 ]] || { echo "expected 3 containers, found $images"; return 1; }
  for expect in 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' \
    'runAsUser: 65532' '- ALL'; do
    [[ $(grep -cF -- "$expect" "$file") -ge $images ]] || { echo "not every container has $expect"; return 1; }
  done
  grep -q -- '--root-key-file=/etc/signet/root-key/root-key' "$file" || { echo "root key not passed as a file"; return 1; }
  ! grep -q 'SIGNET_ROOT_KEY' "$file" || { echo "root key in the environment"; return 1; }
  grep -q '^automountServiceAccountToken: false' "$file" || { echo "vault ServiceAccount mounts a token"; return 1; }
  for expect in 'failurePolicy: Fail' 'sideEffects: None' 'timeoutSeconds: 5' \
    'reinvocationPolicy: Never' 'signet.dev/inject: "true"' 'key: kubernetes.io/metadata.name' \
    'operator: NotIn' '- signet-system' 'path: /mutate' 'scheme: HTTPS' \
    '--self-signed-service=signet-webhook' '--webhook-config-name=signet'; do
    grep -qF -- "$expect" "$file" || { echo "missing: $expect"; return 1; }
  done
  grep -q '^ *service:$' "$file" || { echo "default render does not call the webhook Service"; return 1; }
  grep -q '^ *url: ' "$file" && { echo "default render calls the webhook by URL"; return 1; }
  grep -qF -- '--vault-ca-file' "$file" && { echo "default render passes a vault CA to the webhook"; return 1; }
  grep -qF -- '--geoip-db' "$file" && { echo "default render passes a country database"; return 1; }
  # values-custom.yaml: the vault CA ConfigMap is mounted and passed, and
  # the country database's volume too.
  for expect in '--vault-ca-file=/etc/signet/vault-ca/ca.crt' 'name: vault-ca-bundle' 'key: root.pem' \
    '--geoip-db=/etc/signet/geoip/dbip/country-lite.mmdb' 'claimName: geoip-db' 'mountPath: /etc/signet/geoip'; do
    grep -qF -- "$expect" "$WORK/custom.yaml" || { echo "custom render: missing $expect"; return 1; }
  done
  # The default (SQLite) render: one replica on a volume, no disruption
  # budget, no database URL.
  grep -q '^kind: PodDisruptionBudget$' "$file" && { echo "default render has a PodDisruptionBudget"; return 1; }
  grep -qF 'SIGNET_DATABASE_URL' "$file" && { echo "default render passes a database URL"; return 1; }
  grep -q '^  volumeClaimTemplates:$' "$file" || { echo "default render has no data volume"; return 1; }
  # values-postgres.yaml: three replicas on PostgreSQL, the URL from its
  # Secret (never a literal), no volume, a PDB, spread over nodes.
  local pg=$WORK/postgres.yaml
  for expect in 'replicas: 3' 'podManagementPolicy: Parallel' 'name: SIGNET_DATABASE_URL' \
    'name: signet-database' 'key: url' '--database-ca-file=/etc/signet/database/ca.crt' \
    'kind: PodDisruptionBudget' 'maxUnavailable: 1' 'podAntiAffinity:' 'topologyKey: kubernetes.io/hostname'; do
    grep -qF -- "$expect" "$pg" || { echo "postgres render: missing $expect"; return 1; }
  done
  grep -q '^  volumeClaimTemplates:$' "$pg" && { echo "postgres render still claims a volume"; return 1; }
  grep -q 'postgres://' "$pg" && { echo "postgres render carries a URL literal"; return 1; }
  # tests/e2e's values: processes outside the cluster, webhook called by URL.
  local e2e=$WORK/e2e.yaml
  grep -qF 'url: "https://127.0.0.1:8443/mutate"' "$e2e" || { echo "e2e render lacks the webhook URL"; return 1; }
  grep -q '^ *service:$' "$e2e" && { echo "e2e render still names the webhook Service"; return 1; }
  grep -qF -- '--self-signed-extra-name=127.0.0.1' "$e2e" || { echo "e2e render: URL host not in the certificate"; return 1; }
  [[ $(grep -c '^  replicas: 0$' "$e2e") -eq 3 ]] || { echo "e2e render should have 3 workloads with 0 replicas"; return 1; }
  # Attested enrollment: the vault may review tokens and nothing else; the
  # controller touches no Secret and can never mint a service-account token.
  grep -A12 '^kind: ClusterRoleBinding$' "$file" | grep -qF 'name: signet-vault-tokenreview' ||
    { echo "no ClusterRoleBinding signet-vault-tokenreview"; return 1; }
  [[ $(grep -c 'name: system:auth-delegator' "$file") -eq 1 ]] ||
    { echo "the vault must be bound to system:auth-delegator exactly once"; return 1; }
  grep -qF -- '--kube-token-file=/var/run/secrets/kubernetes.io/serviceaccount/token' "$file" ||
    { echo "the vault is not given its service-account token file"; return 1; }
  grep -qF 'resources: ["secrets"]' "$file" && { echo "default render grants Secrets access"; return 1; }
  for render in "$WORK"/*.yaml; do
    grep -v '^ *#' "$render" | grep -q 'serviceaccounts/token' && { echo "$(basename "$render"): serviceaccounts/token granted"; return 1; }
  done
  [[ $(grep -cF -- '--cluster-name=kubernetes' "$file") -eq 2 ]] ||
    { echo "controller and webhook must both get --cluster-name"; return 1; }
  grep -qF -- '--token-audience=signet' "$file" || { echo "the webhook lacks --token-audience"; return 1; }
  # values-custom.yaml: its cluster, and raw tokens in two namespaces only.
  for expect in '--cluster-name=eu-west.prod' '--token-audience=https://vault.example.internal'; do
    grep -qF -- "$expect" "$WORK/custom.yaml" || { echo "custom render: missing $expect"; return 1; }
  done
  [[ $(grep -c '^kind: Role$' "$WORK/custom.yaml") -eq 2 ]] ||
    { echo "custom render: expected a raw-token Role in each of its 2 namespaces"; return 1; }
  grep -qF 'name: signet-secrets-controller-raw-tokens' "$WORK/custom.yaml" ||
    { echo "custom render: no raw-token Role"; return 1; }
  grep -A2 'resources: \["secrets"\]' "$WORK/custom.yaml" | grep -qE '"(list|watch|update)"' &&
    { echo "custom render: Secrets access wider than create/get/patch/delete"; return 1; }
  # Raw tokens without namespaces: one ClusterRole.
  "$HELM" template signet "$CHART" -f "$HERE/values-required.yaml" --set operator.rawTokens.enabled=true >"$WORK/raw-all.yaml" ||
    { echo "render with operator.rawTokens.enabled failed"; return 1; }
  grep -qF 'name: signet-controller-raw-tokens' "$WORK/raw-all.yaml" &&
    [[ $(grep -c '^kind: Role$' "$WORK/raw-all.yaml") -eq 0 ]] ||
    { echo "raw tokens in every namespace: expected a ClusterRole, no Role"; return 1; }
  # The rotation agent: off by default; on, a hardened pod with no
  # Kubernetes API token, its identity and the vault's CA from Secrets,
  # and egress to the vault, DNS and the listed database ports only.
  grep -q 'signet-rotator' "$file" && { echo "default render runs a rotation agent"; return 1; }
  local rot=$WORK/rotator.yaml
  images=$(grep -c '^ *image: ' "$rot")
  [[ $images -eq 4 ]] || { echo "rotator render: expected 4 containers, found $images"; return 1; }
  for expect in 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' 'runAsNonRoot: true' \
    'runAsUser: 65532' '- ALL' 'type: RuntimeDefault'; do
    [[ $(grep -cF -- "$expect" "$rot") -ge $images ]] || { echo "rotator render: not every container has $expect"; return 1; }
  done
  for expect in 'image: signet-rotator:0.1.0' '--vault=https://signet-vault.signet-system.svc:8200' \
    '--identity=/etc/signet/identity/identity.json' '--interval=10' '--ca=/etc/signet/vault-ca/ca.crt' \
    'secretName: signet-rotator-identity' 'key: rotator.json' 'value: "info,signet_rotator=debug"' \
    'serviceAccountName: signet-rotator' 'cidr: 10.20.0.0/16'; do
    grep -qF -- "$expect" "$rot" || { echo "rotator render: missing $expect"; return 1; }
  done
  # The ServiceAccount and the pod both refuse a token (the vault's two
  # are the others), and nothing is bound to the account.
  [[ $(grep -c 'automountServiceAccountToken: false' "$rot") -eq 4 ]] ||
    { echo "rotator render: the agent's ServiceAccount or pod mounts a token"; return 1; }
  grep -B2 -A1 '^  - kind: ServiceAccount' "$rot" | grep -q 'name: signet-rotator' &&
    { echo "rotator render: a binding names the agent's ServiceAccount"; return 1; }
  local policy
  # The rendered document of the agent's NetworkPolicy alone.
  policy=$(awk -v RS='\n---\n' '/\nkind: NetworkPolicy\n/ && /\n  name: signet-rotator\n/' "$rot")
  for expect in 'port: 8200' 'port: 53' 'port: 5432' 'port: 6379'; do
    grep -qF -- "$expect" <<<"$policy" || { echo "rotator NetworkPolicy: missing $expect"; return 1; }
  done
  grep -qF -- 'port: 3306' <<<"$policy" && { echo "rotator NetworkPolicy: a port not listed"; return 1; }
  grep -q 'cert-manager.io/inject-ca-from: signet-system/signet-webhook' "$WORK/cert-manager.yaml" ||
    { echo "cert-manager render lacks the CA injection annotation"; return 1; }
  [[ $(grep -c '^kind: Certificate$' "$WORK/cert-manager.yaml") -eq 3 ]] ||
    { echo "cert-manager render should have 3 Certificates (CA, vault, webhook)"; return 1; }
}
check "policy: restricted security contexts, root key as file, webhook scoping, vault CA, attestation RBAC, rotation agent" policy

if [[ $control_plane == true ]]; then
  section "throw-away control plane (tests/control-plane/start.sh)"
  CP_DIR=$WORK/control-plane
  if kubeconfig=$(SIGNET_CP_BIN=$BIN "$ROOT/tests/control-plane/start.sh" "$CP_DIR" 2>"$WORK/start.log" | tail -n1) &&
    [[ -f $kubeconfig ]]; then
    pass "started; kubeconfig $kubeconfig"
  else
    fail "start.sh failed"
    sed 's/^/         /' "$WORK/start.log" >&2
    kubeconfig=
  fi
fi

if [[ -n $kubeconfig ]]; then
  section "server-side dry run ($kubeconfig)"
  k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }
  check "API server reachable" k get --raw /readyz
  check "kubectl apply --dry-run=server -f crds/" k apply --dry-run=server -f "$ROOT/crds"
  # Rendered into `default`, which always exists, so nothing needs creating.
  for name in required custom rotator; do
    "$HELM" template signet "$CHART" -n default -f "$HERE/values-$name.yaml" >"$WORK/dry-$name.yaml"
    check "kubectl apply --dry-run=server ($name values)" k apply --dry-run=server -f "$WORK/dry-$name.yaml"
  done
fi

if [[ $control_plane == true && -n $kubeconfig ]]; then
  section "helm install into the real API server"
  NS=signet-system
  APP=signet-check-app
  k create namespace "$NS" >/dev/null
  k label namespace "$NS" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted >/dev/null
  pod_security() {
    local out render
    for render in required rotator; do
      out=$(k apply --dry-run=server -n "$NS" -f "$WORK/$render.yaml" 2>&1) || { echo "$out"; return 1; }
      ! grep -i 'PodSecurity' <<<"$out" || return 1
    done
  }
  check "every pod template meets Pod Security 'restricted' (no warnings)" pod_security
  # The required values and the rotation agent.
  check "helm install signet (CRDs + chart, with the rotation agent)" \
    "$HELM" --kubeconfig "$kubeconfig" install signet "$CHART" -n "$NS" -f "$HERE/values-rotator.yaml"
  check "CRDs established" k wait --for=condition=Established --timeout=30s \
    crd/enrollmenttokens.signet.dev crd/secretgrants.signet.dev
  check "objects stored" k -n "$NS" get statefulset/signet-vault deployment/signet-controller \
    deployment/signet-webhook service/signet-vault service/signet-webhook networkpolicy/signet-vault \
    serviceaccount/signet-vault deployment/signet-rotator serviceaccount/signet-rotator networkpolicy/signet-rotator
  check "MutatingWebhookConfiguration stored" k get mutatingwebhookconfiguration signet
  # can SA VERB RESOURCE: the API server's own RBAC answer for that account.
  can() { [[ $(k auth can-i "$2" "$3" --as "system:serviceaccount:$NS:$1" 2>/dev/null) == yes ]]; }
  cannot() { ! can "$@"; }
  check "the vault may create TokenReviews" can signet-vault create tokenreviews.authentication.k8s.io
  for what in "get secrets" "get pods" "create serviceaccounts/token"; do
    check "the vault may not $what" cannot signet-vault $what
  done
  for what in "get secrets" "create secrets" "create serviceaccounts/token" "create tokenreviews.authentication.k8s.io"; do
    check "the controller may not $what (raw tokens off)" cannot signet-controller $what
  done
  for what in "get secrets" "list pods" "create serviceaccounts/token" "get enrollmenttokens.signet.dev"; do
    check "the rotation agent may not $what" cannot signet-rotator $what
  done

  section "CRs and webhook scoping against the installed chart"
  k create namespace "$APP" >/dev/null
  k label namespace "$APP" pod-security.kubernetes.io/enforce=restricted >/dev/null
  # No controller-manager here: the default ServiceAccount must be made by hand.
  k -n "$APP" create serviceaccount default >/dev/null
  k -n "$NS" create serviceaccount default >/dev/null
  check "EnrollmentToken + SecretGrant of tests/kind accepted" k -n "$APP" apply -f "$ROOT/tests/kind/manifests/grant.yaml"
  must_fail "SecretGrant writing one file twice refused (CEL rule)" "same file" \
    k -n "$APP" apply -f - <<'EOF'
apiVersion: signet.dev/v1alpha1
kind: SecretGrant
metadata:
  name: clash
spec:
  enrollmentToken: demo
  secrets:
    - secret: a
      file: same
    - secret: b
      file: same
EOF
  check "pod that did not opt in admitted although the webhook is unreachable" \
    k -n "$APP" create -f "$ROOT/tests/kind/manifests/pod-plain.yaml"
  must_fail "opted-in pod refused while the webhook is unreachable (failurePolicy Fail)" \
    'inject.signet.dev' k -n "$APP" create -f "$ROOT/tests/kind/manifests/pod.yaml"
  check "opted-in pod in the release namespace admitted (namespace excluded)" \
    k -n "$NS" create -f "$ROOT/tests/kind/manifests/pod.yaml"
  check "helm uninstall" "$HELM" --kubeconfig "$kubeconfig" uninstall signet -n "$NS"
  check "MutatingWebhookConfiguration removed" bash -c \
    "! '$KUBECTL' --kubeconfig '$kubeconfig' get mutatingwebhookconfiguration signet 2>/dev/null"
fi

section "summary"
if [[ ${#failures[@]} -gt 0 ]]; then
  printf '%d check(s) failed:\n' "${#failures[@]}" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "all chart checks passed"
