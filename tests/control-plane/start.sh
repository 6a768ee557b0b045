#!/usr/bin/env bash
# Start (or stop) a throw-away Kubernetes control plane on loopback: one etcd
# and one kube-apiserver, with certificates made here by openssl.
#
#   KUBECONFIG=$(tests/control-plane/start.sh WORKDIR | tail -n1)
#   ...
#   tests/control-plane/start.sh stop WORKDIR
#
# WORKDIR is created if needed and holds everything: pki/, etcd data, logs
# (etcd.log, kube-apiserver.log), pid files, `kubeconfig` (cluster-admin via a
# client certificate in system:masters) and `env`, a shell-sourceable file
# with SIGNET_CP_SERVER, SIGNET_CP_CA, SIGNET_CP_KUBECONFIG, the ports and
# the bin folder.
#
# The binaries come from $SIGNET_CP_BIN when set, else from build.sh (which
# returns at once once they are cached). Ports are picked free unless
# SIGNET_CP_ETCD_PORT / SIGNET_CP_ETCD_PEER_PORT / SIGNET_CP_APISERVER_PORT
# say otherwise. Extra kube-apiserver flags: SIGNET_CP_APISERVER_ARGS
# (split on spaces); the authorization modes: SIGNET_CP_AUTHORIZATION_MODES
# (default RBAC; a node needs Node,RBAC: a second --authorization-mode flag
# would not add to the list). Only 127.0.0.1 is bound, unless
# SIGNET_CP_APISERVER_ARGS overrides --bind-address (tests/node/start.sh does,
# so that pods reach the API server).
#
# There is no controller-manager, scheduler or kubelet: nothing creates the
# `default` service account in new namespaces (the ServiceAccount admission
# plugin is on, so create it before creating pods), nothing garbage-collects,
# and namespaces stay Terminating once deleted.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { die "usage: $0 [start] WORKDIR | $0 stop WORKDIR"; }

mode=start
if [[ ${1:-} == start || ${1:-} == stop ]]; then mode=$1; shift; fi
[[ $# -eq 1 ]] || usage
mkdir -p "$1"
WD=$(cd "$1" && pwd)

# Whether PID runs: a zombie does not (kill -0 succeeds on one, and an
# orphan's zombie may wait a second or two for init to reap it).
running() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

stop_pid_file() {
  local file=$1 pid i
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if [[ -n $pid ]] && running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
      running "$pid" || break
      sleep 0.1
    done
    if running "$pid"; then
      log "pid $pid did not stop on TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$file"
}

if [[ $mode == stop ]]; then
  stop_pid_file "$WD/kube-apiserver.pid"
  stop_pid_file "$WD/etcd.pid"
  log "stopped the control plane in $WD"
  exit 0
fi

if [[ -f $WD/kube-apiserver.pid ]] && kill -0 "$(cat "$WD/kube-apiserver.pid")" 2>/dev/null; then
  die "a kube-apiserver from $WD is already running (pid $(cat "$WD/kube-apiserver.pid")); stop it first"
fi

BIN=${SIGNET_CP_BIN:-}
if [[ -z $BIN ]]; then
  BIN=$("$SCRIPT_DIR/build.sh" | tail -n1)
fi
for t in etcd kube-apiserver kubectl; do
  [[ -x $BIN/$t ]] || die "$BIN/$t is missing (run build.sh)"
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
ETCD_PORT=${SIGNET_CP_ETCD_PORT:-$(free_port)}
ETCD_PEER_PORT=${SIGNET_CP_ETCD_PEER_PORT:-$(free_port)}
APISERVER_PORT=${SIGNET_CP_APISERVER_PORT:-$(free_port)}

# ---- certificates ---------------------------------------------------------------
PKI=$WD/pki
mkdir -p "$PKI"
if [[ ! -f $PKI/ca.crt ]]; then
  log "making certificates in $PKI"
  (
    cd "$PKI"
    umask 077
    gen_ec() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
    gen_ec ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=signet-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.crt 2>/dev/null
    # issue NAME SUBJECT EXTENSIONS...
    issue() {
      local name=$1 subj=$2; shift 2
      gen_ec "$name.key"
      openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
      printf '%s\n' "$@" >"$name.ext"
      openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 30 \
        -extfile "$name.ext" -out "$name.crt" 2>/dev/null
      rm -f "$name.csr" "$name.ext"
    }
    issue apiserver "/CN=kube-apiserver" \
      "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" \
      "subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    issue admin "/O=system:masters/CN=signet-test-admin" \
      "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth"
    # Service-account tokens are signed with this key.
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key 2>/dev/null
    openssl pkey -in sa.key -pubout -out sa.pub
  )
fi
# kube-apiserver's client certificate towards kubelets (logs, exec), for a
# node from tests/node/ (--kubelet-client-certificate in
# SIGNET_CP_APISERVER_ARGS). Issued apart so older work folders get it too.
if [[ ! -f $PKI/kubelet-client.crt ]]; then
  (
    cd "$PKI"
    umask 077
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out kubelet-client.key 2>/dev/null
    openssl req -new -key kubelet-client.key -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      -out kubelet-client.csr 2>/dev/null
    printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=clientAuth" >kubelet-client.ext
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 -days 30 \
      -extfile kubelet-client.ext -out kubelet-client.crt 2>/dev/null
    rm -f kubelet-client.csr kubelet-client.ext
  )
fi

# ---- etcd -----------------------------------------------------------------------
start_daemon() { # NAME ARGS...: runs in its own session, logs to WD/NAME.log
  local name=$1; shift
  setsid "$@" >>"$WD/$name.log" 2>&1 </dev/null &
  echo $! >"$WD/$name.pid"
}

log "starting etcd on 127.0.0.1:$ETCD_PORT"
start_daemon etcd "$BIN/etcd" \
  --name signet-test \
  --data-dir "$WD/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "signet-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster-state new \
  --unsafe-no-fsync \
  --log-level warn

fail() {
  log "error: $*"
  local f
  for f in etcd kube-apiserver; do
    if [[ -f $WD/$f.log ]]; then
      log "last lines of $WD/$f.log:"
      tail -n 20 "$WD/$f.log" >&2
    fi
  done
  stop_pid_file "$WD/kube-apiserver.pid"
  stop_pid_file "$WD/etcd.pid"
  exit 1
}

for i in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; then break; fi
  kill -0 "$(cat "$WD/etcd.pid")" 2>/dev/null || fail "etcd exited"
  [[ $i -lt 100 ]] || fail "etcd not healthy after 20s"
  sleep 0.2
done

# ---- kube-apiserver -------------------------------------------------------------
SERVER=https://127.0.0.1:$APISERVER_PORT
# shellcheck disable=SC2206 # split on spaces on purpose
EXTRA_ARGS=(${SIGNET_CP_APISERVER_ARGS:-})
log "starting kube-apiserver on $SERVER"
start_daemon kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 \
  --advertise-address 127.0.0.1 \
  --secure-port "$APISERVER_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" \
  --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/24 \
  --authorization-mode "${SIGNET_CP_AUTHORIZATION_MODES:-RBAC}" \
  --allow-privileged=true \
  --profiling=false \
  --endpoint-reconciler-type none \
  "${EXTRA_ARGS[@]}"

KUBECONFIG_FILE=$WD/kubeconfig
b64() { base64 -w0 <"$1"; }
umask_old=$(umask)
umask 077
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: signet-test
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: signet-test-admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: signet-test
  context:
    cluster: signet-test
    user: signet-test-admin
current-context: signet-test
EOF
umask "$umask_old"

# /readyz turns ready once the post-start hooks (RBAC bootstrap policy, ...) ran.
for i in $(seq 1 300); do
  if "$BIN/kubectl" --kubeconfig "$KUBECONFIG_FILE" --request-timeout=2s get --raw /readyz >/dev/null 2>&1; then break; fi
  kill -0 "$(cat "$WD/kube-apiserver.pid")" 2>/dev/null || fail "kube-apiserver exited"
  [[ $i -lt 300 ]] || fail "kube-apiserver not ready after 60s"
  sleep 0.2
done

cat >"$WD/env" <<EOF
SIGNET_CP_BIN=$BIN
SIGNET_CP_SERVER=$SERVER
SIGNET_CP_CA=$PKI/ca.crt
SIGNET_CP_KUBECONFIG=$KUBECONFIG_FILE
SIGNET_CP_ETCD_PORT=$ETCD_PORT
SIGNET_CP_APISERVER_PORT=$APISERVER_PORT
EOF
log "ready: $SERVER (stop with: $0 stop $WD)"
echo "$KUBECONFIG_FILE"
