#!/usr/bin/env bash
# Start (or stop) a one-node Kubernetes cluster on this machine: etcd and
# kube-apiserver from tests/control-plane/start.sh, kube-scheduler,
# kube-controller-manager, Debian's containerd and runc, a bridge with the
# bridge + host-local CNI plugins, a kubelet, kube-proxy (iptables) and
# Debian's dnsmasq as the cluster DNS. Needs root. Pods use local images
# (tests/node/images.sh).
#
#   KUBECONFIG=$(tests/node/start.sh WORKDIR | tail -n1)
#   tests/node/start.sh namespace WORKDIR NS...   # creates NS, waits for its `default` SA + kube-root-ca.crt
#   tests/node/start.sh stop WORKDIR              # everything, even after a failure
#
# The last stdout line of `start` is the cluster-admin kubeconfig. WORKDIR
# holds everything the node writes where it can be told to: control-plane/
# (etcd, kube-apiserver, pki/), containerd/ (config, root, state, socket),
# runc/ (runc's state), cni/ (config and IP allocations), kubelet/ (its root
# dir), pod-logs/, dns/ (dnsmasq's hosts files), the logs (containerd.log,
# kubelet.log, kube-scheduler.log, kube-controller-manager.log,
# kube-proxy.log, dnsmasq.log, dns-watch.log), pid files and `env` (the
# control plane's values plus SIGNET_NODE_NAME, SIGNET_NODE_IP,
# SIGNET_NODE_CONTAINERD (the socket) and SIGNET_NODE_BRIDGE).
#
# Pods reach Services: kube-proxy (iptables mode) routes ClusterIPs, and
# dnsmasq on the node IP answers NAME.NAMESPACE.svc.cluster.local from a
# `kubectl get services --watch` loop. The API server listens on every
# address (0.0.0.0; callers still need a certificate or a token) and
# advertises the node IP, so the `kubernetes` Service (10.96.0.1) reaches it
# from pods.
#
# What cannot be moved and `stop` cleans up: the bridge, kube-proxy's
# iptables rules (`kube-proxy --cleanup`), the /kubepods cgroups, /var/lib/kubelet/device-plugins (a fixed path of the kubelet),
# /var/lib/cni/results (libcni's cache), /run/containerd/s (the shims'
# sockets) and /var/log/containers (links into WORKDIR): each folder goes
# whole if `start` created it, else only this node's entries; and every
# mount under WORKDIR (the kubelet bind-mounts its root dir onto itself;
# pod volumes, container root filesystems and network namespaces live
# there). Containers are stopped through containerd, then runc, then by
# killing what is left in the /kubepods cgroups.
#
# Settings (environment): SIGNET_CP_BIN (the tools of
# tests/control-plane/build.sh, recipe 3 or later, built when unset), SIGNET_NODE_NAME
# (signet-node), SIGNET_NODE_BRIDGE (signet0), SIGNET_NODE_SUBNET (the
# first three octets of a /24, 10.244.0: the node is .1, pods get .10 on).
# One node per machine: the bridge, the kubelet's port 10250 on the node IP,
# kube-proxy's iptables chains and the /kubepods cgroups are shared.
#
# Facts about this kind of machine behind the choices here are in the
# README.md next to this script: containerd's CRI needs
# restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE), cgroup v1 needs
# cgroupDriver cgroupfs and failCgroupV1 false, and the node IP cannot be
# loopback; pods reaching ClusterIPs on the same bridge need
# net.bridge.bridge-nf-call-iptables=1 (br_netfilter).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
T0=$EPOCHREALTIME
log() { printf '[node %5.1fs] %s\n' "$(awk "BEGIN { print $EPOCHREALTIME - $T0 }")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { die "usage: $0 [start] WORKDIR | $0 stop WORKDIR | $0 namespace WORKDIR NS..."; }

mode=start
case ${1:-} in start | stop | namespace) mode=$1; shift ;; esac
[[ $# -ge 1 ]] || usage
[[ $mode == namespace || $# -eq 1 ]] || usage
[[ $mode == namespace || $(id -u) == 0 ]] || die "a node needs root (mounts, cgroups, a bridge, network namespaces)"
mkdir -p "$1"
WD=$(cd "$1" && pwd)
shift

NODE_NAME=${SIGNET_NODE_NAME:-signet-node}
BRIDGE=${SIGNET_NODE_BRIDGE:-signet0}
SUBNET=${SIGNET_NODE_SUBNET:-10.244.0}
NODE_IP=$SUBNET.1
CNI_NETWORK=signet-node
CP=$WD/control-plane
SOCK=$WD/containerd/containerd.sock
# Paths the kubelet (device plugins, log links), libcni (results) and the
# containerd shims (their sockets) use whatever they are told; `stop`
# removes those that `start` found missing.
FIXED_PATHS=(/var/lib/kubelet /var/lib/cni /var/log/containers /run/containerd)
SERVICE_CIDR=10.96.0.0/24   # tests/control-plane/start.sh's --service-cluster-ip-range
CLUSTER_DOMAIN=cluster.local
CGROUP_CONTROLLERS=(cpu cpuacct cpuset memory devices freezer blkio pids systemd hugetlb net_cls net_prio perf_event rdma misc unified)

need_root() { [[ $(id -u) == 0 ]] || die "a node needs root (mounts, cgroups, network namespaces)"; }

# ---- stop -----------------------------------------------------------------------
# Whether PID runs: a zombie does not. Orphans are reaped by this VM's init
# a second or two after they exit, and kill -0 succeeds on a zombie.
running() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [[ -n $state && $state != Z ]]
}

stop_pid_files() { # FILE...: TERM them all, then KILL what runs after 10 s
  local file pid i left pids=()
  for file in "$@"; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    if [[ -n $pid ]] && running "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$file"
  done
  for i in $(seq 1 100); do
    left=0
    for pid in "${pids[@]}"; do running "$pid" && left=1; done
    ((left)) || return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do
    if running "$pid"; then
      log "pid $pid did not stop on TERM; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}
stop_pid_file() { stop_pid_files "$1"; }

# FILE holds the PID of a session leader (setsid): TERM its whole process
# group, then KILL what still runs after 5 s.
group_members() { # PGID: the running members' PIDs
  awk -v g="$1" '{ pid = $1; sub(/^.*\) /, ""); if ($3 == g && $1 != "Z") print pid }' /proc/[0-9]*/stat 2>/dev/null || true
}
stop_group_file() {
  local file=$1 pgid i
  [[ -f $file ]] || return 0
  pgid=$(cat "$file")
  rm -f "$file"
  [[ -n $pgid && -n $(group_members "$pgid") ]] || return 0
  kill -TERM -- "-$pgid" 2>/dev/null || true
  for i in $(seq 1 50); do
    [[ -n $(group_members "$pgid") ]] || return 0
    sleep 0.1
  done
  kill -KILL -- "-$pgid" 2>/dev/null || true
}

# PIDs whose command line names this WORKDIR's containerd socket: the shims
# (containerd-shim-runc-v2 -address SOCK ...), which outlive containerd.
own_shims() {
  # The pattern comes from a file so that grep's own command line lacks it.
  grep -lsaF -f <(printf '%s\n' "$SOCK") /proc/[0-9]*/cmdline 2>/dev/null |
    sed -n 's|^/proc/\([0-9]*\)/cmdline$|\1|p' || true
}

# PIDs of every process in the node's pod cgroups (all of them are this
# node's: start refuses to run when /kubepods exists).
pod_processes() {
  local controller=pids
  [[ -d /sys/fs/cgroup/$controller/kubepods ]] || controller=memory
  [[ -d /sys/fs/cgroup/$controller/kubepods ]] || return 0
  find "/sys/fs/cgroup/$controller/kubepods" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u
}

stop_node() {
  need_root
  log "stopping the node in $WD"
  # 1. What creates pods (controller-manager, scheduler), then the kubelet,
  #    so that nothing restarts what step 2 stops.
  stop_pid_files "$WD/kube-controller-manager.pid" "$WD/kube-scheduler.pid" "$WD/kubelet.pid"
  # 2. Every container and sandbox, through containerd while it runs, so
  #    that the shims exit cleanly (and remove their sockets).
  local ctr_k8s=(ctr --address "$SOCK" --timeout 10s -n k8s.io) id pid
  if [[ -S $SOCK ]] && "${ctr_k8s[@]}" version >/dev/null 2>&1; then
    for id in $("${ctr_k8s[@]}" tasks ls -q 2>/dev/null); do
      "${ctr_k8s[@]}" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr_k8s[@]}" tasks ls -q 2>/dev/null); do
      "${ctr_k8s[@]}" tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    for id in $("${ctr_k8s[@]}" containers ls -q 2>/dev/null); do
      "${ctr_k8s[@]}" containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  # 3. Whatever survived (containerd dead or a call failed): runc's own
  #    state (one root per containerd namespace), then the cgroups' members.
  if command -v runc >/dev/null; then
    local root
    for root in "$WD"/runc/*/; do
      [[ -d $root ]] || continue
      for id in $(runc --root "$root" list -q 2>/dev/null); do
        runc --root "$root" kill -a "$id" KILL 2>/dev/null || true
      done
      sleep 0.2
      for id in $(runc --root "$root" list -q 2>/dev/null); do
        runc --root "$root" delete -f "$id" 2>/dev/null || true
      done
    done
  fi
  for pid in $(pod_processes); do kill -KILL "$pid" 2>/dev/null || true; done
  # 4. containerd, then any shim of it still running.
  stop_pid_file "$WD/containerd.pid"
  for pid in $(own_shims); do kill -KILL "$pid" 2>/dev/null || true; done
  # 4b. kube-proxy and its iptables rules; the DNS (dnsmasq and the loop
  #     that feeds it).
  stop_group_file "$WD/dns-watch.pid"
  stop_pid_files "$WD/kube-proxy.pid" "$WD/dnsmasq.pid"
  if [[ -f $WD/kube-proxy-started ]]; then
    local proxy_bin
    proxy_bin=$(sed -n 's/^SIGNET_CP_BIN=//p' "$CP/env" 2>/dev/null || true)
    if [[ -x $proxy_bin/kube-proxy ]]; then
      "$proxy_bin/kube-proxy" --cleanup --proxy-mode=iptables >>"$WD/kube-proxy.log" 2>&1 ||
        log "kube-proxy --cleanup failed (see $WD/kube-proxy.log)"
      # --cleanup leaves the (empty) KUBE-FIREWALL chain kube-proxy makes in
      # the filter tables, jumped to from INPUT and OUTPUT.
      local tables hook
      for tables in iptables ip6tables; do
        "$tables" -w -S KUBE-FIREWALL >/dev/null 2>&1 || continue
        for hook in INPUT OUTPUT; do
          while "$tables" -w -D "$hook" -j KUBE-FIREWALL 2>/dev/null; do :; done
        done
        if ! { "$tables" -w -F KUBE-FIREWALL && "$tables" -w -X KUBE-FIREWALL; } 2>/dev/null; then
          log "could not remove $tables chain KUBE-FIREWALL"
        fi
      done
    else
      log "cannot remove kube-proxy's iptables rules: no kube-proxy in the SIGNET_CP_BIN of $CP/env"
    fi
    rm -f "$WD/kube-proxy-started"
  fi
  # 5. Every mount under WD, deepest first (pod volumes, root filesystems,
  #    network namespaces, the kubelet's bind mount of its root dir).
  local mounts mount try
  for try in 1 2 3; do
    mapfile -t mounts < <(awk -v wd="$WD/" 'index($5, wd) == 1 { print $5 }' /proc/self/mountinfo | sort -r -u)
    ((${#mounts[@]})) || break
    for mount in "${mounts[@]}"; do
      umount "$mount" 2>/dev/null || { ((try < 3)) || umount -l "$mount" 2>/dev/null || true; }
    done
    sleep 0.2
  done
  # 6. The bridge (the pods' veths went with their namespaces).
  if [[ -f $WD/bridge-created ]] && ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link delete "$BRIDGE" 2>/dev/null || log "could not delete bridge $BRIDGE"
  fi
  rm -f "$WD/bridge-created"
  # 7. The kubelet's cgroups (cgroupfs driver, cgroups v1: one tree per
  #    controller), deepest first; they are empty once the processes died.
  local controller
  for controller in "${CGROUP_CONTROLLERS[@]}"; do
    [[ -d /sys/fs/cgroup/$controller/kubepods ]] || continue
    find "/sys/fs/cgroup/$controller/kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ ! -d /sys/fs/cgroup/$controller/kubepods ]] ||
      log "could not remove /sys/fs/cgroup/$controller/kubepods (pids left: $(pod_processes | tr '\n' ' '))"
  done
  # 8. What the kubelet, libcni and the shims wrote outside WD: the folders
  #    start found missing go whole; in folders that existed, only this
  #    node's entries (CNI results of its sandboxes, log links into WD).
  if [[ -f $WD/created-paths ]]; then
    local path
    while read -r path; do
      [[ -n $path ]] && rm -rf -- "$path"
    done <"$WD/created-paths"
    rm -f "$WD/created-paths"
  fi
  local sandboxes=$WD/containerd/root/io.containerd.grpc.v1.cri/sandboxes
  if [[ -d /var/lib/cni/results && -d $sandboxes ]]; then
    for id in "$sandboxes"/*; do rm -f /var/lib/cni/results/*-"${id##*/}"-* 2>/dev/null || true; done
  fi
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$WD/*" -delete 2>/dev/null || true
  fi
  # 9. The control plane.
  if [[ -d $CP ]]; then
    bash "$REPO/tests/control-plane/start.sh" stop "$CP" >&2 || true
  fi
  local left
  left=$( (own_shims; pod_processes) | tr '\n' ' ')
  [[ -z ${left// /} ]] || log "warning: processes still running: $left"
  log "stopped"
}

if [[ $mode == stop ]]; then
  stop_node
  exit 0
fi

# ---- namespace ------------------------------------------------------------------
# A namespace ready for pods: created if missing, then waited for until the
# controller-manager gave it the `default` ServiceAccount (pods are refused
# without it) and the kube-root-ca.crt ConfigMap (the projected
# service-account volume of pods that automount a token needs it).
kubectl_cp() { "$BIN/kubectl" --kubeconfig "$CP/kubeconfig" --request-timeout=20s "$@"; }
make_namespace() {
  local ns=$1 i
  kubectl_cp get namespace "$ns" >/dev/null 2>&1 || kubectl_cp create namespace "$ns" >/dev/null
  for i in $(seq 1 150); do
    kubectl_cp -n "$ns" get serviceaccount default >/dev/null 2>&1 &&
      kubectl_cp -n "$ns" get configmap kube-root-ca.crt >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "namespace $ns: no \`default\` ServiceAccount or kube-root-ca.crt ConfigMap after 30 s; is the controller-manager running? (see $WD/kube-controller-manager.log)"
}

if [[ $mode == namespace ]]; then
  [[ -f $WD/env ]] || die "no node in $WD (no env file): start it first"
  BIN=$(sed -n 's/^SIGNET_CP_BIN=//p' "$WD/env")
  for ns in "$@"; do make_namespace "$ns"; done
  exit 0
fi

# ---- start ----------------------------------------------------------------------
need_root
[[ -d /sys/fs/cgroup/memory ]] ||
  die "expected cgroup v1 (this script configures the kubelet for it); /sys/fs/cgroup/memory is missing"

# Debian's containerd, runc and CNI plugins, when missing.
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
    die "apt-get install ${missing[*]} failed"
fi

BIN=${SIGNET_CP_BIN:-}
if [[ -z $BIN ]]; then
  BIN=$(bash "$REPO/tests/control-plane/build.sh" | tail -n1)
fi
for t in etcd kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager kube-proxy; do
  [[ -x $BIN/$t ]] || die "$BIN/$t is missing: run tests/control-plane/build.sh (it builds the scheduler, controller-manager and kube-proxy since recipe 3)"
done
# Replies from a Service's pod to a client pod on the same bridge must pass
# through iptables, or conntrack never undoes kube-proxy's DNAT.
[[ -f /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
  die "/proc/sys/net/bridge/bridge-nf-call-iptables is missing: kube-proxy needs br_netfilter (modprobe br_netfilter)"
if [[ $(cat /proc/sys/net/bridge/bridge-nf-call-iptables) != 1 ]]; then
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables ||
    die "could not set net.bridge.bridge-nf-call-iptables=1"
fi

if [[ -f $WD/kubelet.pid ]] && kill -0 "$(cat "$WD/kubelet.pid")" 2>/dev/null; then
  die "a kubelet from $WD is already running; stop it first"
fi
if ip link show "$BRIDGE" >/dev/null 2>&1; then
  die "bridge $BRIDGE exists: another node runs on this machine, or one was not stopped (tests/node/start.sh stop ITS_WORKDIR, or ip link delete $BRIDGE)"
fi
for controller in memory cpu pids; do
  [[ ! -d /sys/fs/cgroup/$controller/kubepods ]] ||
    die "/sys/fs/cgroup/$controller/kubepods exists: another node runs on this machine, or one was not stopped"
done

fail() {
  log "error: $*"
  local f
  for f in containerd kubelet kube-controller-manager kube-scheduler kube-proxy dnsmasq; do
    if [[ -f $WD/$f.log ]]; then
      log "last lines of $WD/$f.log:"
      tail -n 25 "$WD/$f.log" >&2
    fi
  done
  stop_node
  exit 1
}

: >"$WD/created-paths"
for path in "${FIXED_PATHS[@]}"; do
  [[ -e $path ]] || echo "$path" >>"$WD/created-paths"
done

# ---- control plane --------------------------------------------------------------
log "control plane (etcd + kube-apiserver with Node,RBAC and NodeRestriction)"
PKI=$CP/pki
# Later flags win: the API server listens on every address and advertises
# the node IP, and its lease reconciler points the `kubernetes` Service
# there, so pods reach it at 10.96.0.1:443 (in its certificate).
SIGNET_CP_AUTHORIZATION_MODES=Node,RBAC \
  SIGNET_CP_APISERVER_ARGS="--enable-admission-plugins=NodeRestriction --kubelet-client-certificate=$PKI/kubelet-client.crt --kubelet-client-key=$PKI/kubelet-client.key --kubelet-preferred-address-types=InternalIP --bind-address=0.0.0.0 --advertise-address=$NODE_IP --endpoint-reconciler-type=lease" \
  SIGNET_CP_BIN=$BIN bash "$REPO/tests/control-plane/start.sh" "$CP" >/dev/null ||
  fail "tests/control-plane/start.sh failed"
# shellcheck disable=SC1091
source "$CP/env"

# ---- the kubelet's certificates ----------------------------------------------------
mkdir -p "$WD/pki"
(
  cd "$WD/pki"
  umask 077
  issue() { # NAME SUBJECT EXTENSIONS...
    local name=$1 subj=$2; shift 2
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null
    openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr" 2>/dev/null
    printf '%s\n' "$@" >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -sha256 -days 30 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  }
  # The Node authorizer and NodeRestriction know a kubelet by this identity.
  issue kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" \
    "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
  issue kubelet-serving "/CN=$NODE_NAME" \
    "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  # The users RBAC's bootstrap policy binds to each component's role.
  for component in kube-scheduler kube-controller-manager kube-proxy; do
    issue "$component" "/CN=system:$component" \
      "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth"
  done
)
b64() { base64 -w0 <"$1"; }
write_kubeconfig() { # NAME: WD/NAME.kubeconfig with the client certificate WD/pki/NAME-client or NAME
  local name=$1 cert=$WD/pki/$1
  [[ -f $cert.crt ]] || cert=$WD/pki/$1-client
  (
    umask 077
    cat >"$WD/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: signet-test
  cluster:
    server: $SIGNET_CP_SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(b64 "$cert.crt")
    client-key-data: $(b64 "$cert.key")
contexts:
- name: $name
  context:
    cluster: signet-test
    user: $name
current-context: $name
EOF
  )
}
for name in kubelet kube-scheduler kube-controller-manager kube-proxy; do write_kubeconfig "$name"; done

# ---- scheduler and controller-manager ------------------------------------------------
# Only the controllers Signet's chart and tests use: service accounts and
# their tokens, namespaces, the root CA ConfigMap, Deployments,
# ReplicaSets, StatefulSets, Jobs, garbage collection, PersistentVolume
# binding, EndpointSlices (for kube-proxy), and the node lifecycle (it lifts
# the not-ready taint the kubelet registers the node with, which keeps the
# scheduler away until then). Each controller runs with its
# own service account's credentials, as kubeadm sets it up.
log "kube-scheduler and kube-controller-manager"
start_component() { # NAME ARGS...: own session, WD/NAME.log, WD/NAME.pid
  local name=$1; shift
  setsid "$@" >>"$WD/$name.log" 2>&1 </dev/null &
  echo $! >"$WD/$name.pid"
}
start_component kube-scheduler "$BIN/kube-scheduler" \
  --kubeconfig "$WD/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig "$WD/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig "$WD/kube-scheduler.kubeconfig" \
  --leader-elect=false \
  --secure-port=0
start_component kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$WD/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig "$WD/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig "$WD/kube-controller-manager.kubeconfig" \
  --leader-elect=false \
  --secure-port=0 \
  --use-service-account-credentials=true \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --controllers=serviceaccount-controller,serviceaccount-token-controller,namespace-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,statefulset-controller,job-controller,garbage-collector-controller,persistentvolume-binder-controller,endpointslice-controller,node-lifecycle-controller

# ---- bridge and CNI ---------------------------------------------------------------
log "bridge $BRIDGE $NODE_IP/24"
ip link add name "$BRIDGE" type bridge || fail "could not create bridge $BRIDGE"
touch "$WD/bridge-created"
ip addr add "$NODE_IP/24" dev "$BRIDGE" || fail "could not address $BRIDGE"
ip link set "$BRIDGE" up || fail "could not bring $BRIDGE up"
mkdir -p "$WD/cni/net.d" "$WD/cni/ipam"
cat >"$WD/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$WD/cni/ipam",
        "ranges": [[{ "subnet": "$SUBNET.0/24", "rangeStart": "$SUBNET.10", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
EOF

# ---- cluster DNS ---------------------------------------------------------------------
# dnsmasq on the node IP answers NAME.NAMESPACE.svc.cluster.local from one
# hosts file per Service under dns/hosts (re-read on change), which a
# `kubectl get services --watch` loop keeps current; anything else in
# cluster.local is NXDOMAIN, and nothing is forwarded.
log "cluster DNS: dnsmasq on $NODE_IP:53"
mkdir -p "$WD/dns/hosts"
printf 'nameserver %s\n' "$NODE_IP" >"$WD/dns/resolv.conf"
dnsmasq --keep-in-foreground --conf-file=/dev/null --user=root \
  --listen-address="$NODE_IP" --bind-interfaces --port=53 \
  --no-resolv --no-hosts --no-negcache --local="/$CLUSTER_DOMAIN/" \
  --hostsdir="$WD/dns/hosts" --pid-file= --log-facility="$WD/dnsmasq.log" \
  >>"$WD/dnsmasq.log" 2>&1 </dev/null &
echo $! >"$WD/dnsmasq.pid"
dns_watch() {
  while :; do
    "$BIN/kubectl" --kubeconfig "$CP/kubeconfig" get services --all-namespaces --watch --output-watch-events \
      -o jsonpath='{.type} {.object.metadata.namespace} {.object.metadata.name} {.object.spec.clusterIP}{"\n"}' || true
    sleep 1
  done | while read -r type ns name ip; do
    file=$WD/dns/hosts/$ns.$name
    if [[ $type == DELETED ]]; then
      rm -f "$file"
    elif [[ $ip =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
      # Written beside the folder dnsmasq reads, then moved in whole.
      printf '%s %s.%s.svc.%s\n' "$ip" "$name" "$ns" "$CLUSTER_DOMAIN" >"$WD/dns/$ns.$name.tmp"
      mv -f "$WD/dns/$ns.$name.tmp" "$file"
    fi
  done
}
export -f dns_watch
WD=$WD BIN=$BIN CP=$CP CLUSTER_DOMAIN=$CLUSTER_DOMAIN setsid bash -c dns_watch >>"$WD/dns-watch.log" 2>&1 </dev/null &
echo $! >"$WD/dns-watch.pid"

# ---- containerd ---------------------------------------------------------------------
log "containerd (private config, root, state and socket under $WD/containerd)"
mkdir -p "$WD/containerd" "$WD/runc"
PAUSE_IMAGE=${SIGNET_NODE_PAUSE_IMAGE:-signet.invalid/pause:node}
cat >"$WD/containerd/config.toml" <<EOF
version = 2
root = "$WD/containerd/root"
state = "$WD/containerd/state"
oom_score = 0

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$WD/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$PAUSE_IMAGE"
    # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
    # with "runc create failed: ... can't get final child's PID from pipe".
    restrict_oom_score_adj = true
    # Network namespaces under the state dir instead of /run/netns.
    netns_mounts_under_state_dir = true
    disable_apparmor = true
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "$(command -v runc)"
          # runc's state here, not in /run/containerd/runc.
          Root = "$WD/runc"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$WD/cni/net.d"
      max_conf_num = 1
EOF
setsid containerd --config "$WD/containerd/config.toml" >>"$WD/containerd.log" 2>&1 </dev/null &
echo $! >"$WD/containerd.pid"
for i in $(seq 1 100); do
  [[ -S $SOCK ]] && ctr --address "$SOCK" version >/dev/null 2>&1 && break
  kill -0 "$(cat "$WD/containerd.pid")" 2>/dev/null || fail "containerd exited"
  [[ $i -lt 100 ]] || fail "containerd not answering after 20s"
  sleep 0.2
done

# ---- kubelet ------------------------------------------------------------------------
log "kubelet $NODE_NAME on $NODE_IP"
mkdir -p "$WD/kubelet" "$WD/pod-logs" "$WD/volume-plugins"
cat >"$WD/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$SOCK
# cgroup v1 without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
tlsCertFile: $WD/pki/kubelet-serving.crt
tlsPrivateKeyFile: $WD/pki/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
podLogsDir: $WD/pod-logs
volumePluginDir: $WD/volume-plugins
clusterDomain: $CLUSTER_DOMAIN
clusterDNS: [$NODE_IP]
# No search domains or name servers of the host's.
resolvConf: $WD/dns/resolv.conf
# The images are imported, never pulled: image GC must never remove them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A shared build machine's disk: evict only when it is really full.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
makeIPTablesUtilChains: false
serializeImagePulls: false
# Status changes reach the API server sooner than the default 10 s.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
registerNode: true
EOF
setsid "$BIN/kubelet" \
  --config "$WD/kubelet-config.yaml" \
  --kubeconfig "$WD/kubelet.kubeconfig" \
  --root-dir "$WD/kubelet" \
  --cert-dir "$WD/pki" \
  --hostname-override "$NODE_NAME" \
  --node-ip "$NODE_IP" \
  --v=2 >>"$WD/kubelet.log" 2>&1 </dev/null &
echo $! >"$WD/kubelet.pid"

# ---- kube-proxy ---------------------------------------------------------------------
# iptables mode. It leaves the conntrack sysctls alone (this VM may not let
# it write them) and does not route NodePorts on localhost (no
# route_localnet). `stop` removes its rules with `kube-proxy --cleanup`.
log "kube-proxy (iptables)"
cat >"$WD/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $WD/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
nodePortAddresses: [primary]
clusterCIDR: $SUBNET.0/24
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
EOF
touch "$WD/kube-proxy-started"
start_component kube-proxy "$BIN/kube-proxy" --config "$WD/kube-proxy-config.yaml" --v=2

{
  cat "$CP/env"
  echo "SIGNET_NODE_NAME=$NODE_NAME"
  echo "SIGNET_NODE_IP=$NODE_IP"
  echo "SIGNET_NODE_BRIDGE=$BRIDGE"
  echo "SIGNET_NODE_CONTAINERD=$SOCK"
  echo "SIGNET_NODE_PAUSE_IMAGE=$PAUSE_IMAGE"
} >"$WD/env"

for i in $(seq 1 300); do
  ready=$(kubectl_cp get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
  [[ $ready == True ]] && break
  kill -0 "$(cat "$WD/kubelet.pid")" 2>/dev/null || fail "kubelet exited"
  kill -0 "$(cat "$WD/containerd.pid")" 2>/dev/null || fail "containerd exited"
  [[ $i -lt 300 ]] || fail "node $NODE_NAME not Ready after 60s (Ready=$ready)"
  sleep 0.2
done
for name in kube-scheduler kube-controller-manager kube-proxy dnsmasq; do
  kill -0 "$(cat "$WD/$name.pid")" 2>/dev/null || fail "$name exited"
done
# The controller-manager works once namespace `default` has its account,
# and the scheduler may place pods once the node lifecycle controller took
# the node's not-ready taint away.
for i in $(seq 1 150); do
  taints=$(kubectl_cp get node "$NODE_NAME" -o jsonpath='{.spec.taints[*].key}' 2>/dev/null || echo unknown)
  kubectl_cp -n default get serviceaccount default >/dev/null 2>&1 && [[ -z $taints ]] && break
  [[ $i -lt 150 ]] || fail "after 30 s: no ServiceAccount default/default, or node taints left ($taints): see $WD/kube-controller-manager.log"
  sleep 0.2
done
log "node $NODE_NAME Ready (stop with: $0 stop $WD)"
echo "$CP/kubeconfig"
