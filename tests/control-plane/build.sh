#!/usr/bin/env bash
# Build, once, the pinned control-plane tools that Signet's end-to-end tests
# run against: kube-apiserver, kubectl, etcd, helm and kubeconform (plus
# kubeconform's JSON schemas for the built-in kinds), and the kubelet,
# kube-scheduler, kube-controller-manager and kube-proxy of the real node
# (tests/node/).
#
# Everything comes from the Go module proxy and is compiled here with the
# local Go toolchain: no release binaries, no container images.
#
#   BIN=$(tests/control-plane/build.sh | tail -n1)
#
# The last line on stdout is the bin directory; progress goes to stderr.
# Results are cached under ${SIGNET_CP_CACHE:-$HOME/.cache/signet-control-plane}
# in a folder named after the pinned versions; a second run returns at once.
# Go's own module and build caches are the default ones, so a rebuild after
# a version bump reuses every download that did not change.
set -euo pipefail

# ---- pinned versions ------------------------------------------------------
KUBERNETES_VERSION=v1.34.4   # k8s.io/kubernetes: kube-apiserver, kubectl, the node's components
ETCD_VERSION=v3.5.35         # go.etcd.io/etcd/server/v3
HELM_VERSION=v3.19.5         # helm.sh/helm/v3 (built on k8s.io/client-go v0.34)
KUBECONFORM_VERSION=v0.8.0   # github.com/yannh/kubeconform
# Bump when the way things are built changes, to get a fresh cache folder.
RECIPE_REVISION=3   # 2: adds the kubelet; 3: scheduler, controller-manager, kube-proxy
# ---------------------------------------------------------------------------

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '[control-plane build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

GO=${GO:-}
if [[ -z $GO ]]; then
  if command -v go >/dev/null 2>&1; then GO=$(command -v go)
  elif [[ -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go
  else die "no Go toolchain found (set GO=/path/to/go)"; fi
fi
command -v python3 >/dev/null 2>&1 || die "python3 is needed to generate kubeconform schemas"

# Never let Go fetch another toolchain, and keep any go.work out of the way.
export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
GO_VERSION=$("$GO" env GOVERSION)
GOMODCACHE=$("$GO" env GOMODCACHE)

# v1.34.4 -> 1, 34, v0.34.4 (the tag of the k8s.io/* staging modules)
k8s_triple=${KUBERNETES_VERSION#v}
K8S_MAJOR=${k8s_triple%%.*}
k8s_rest=${k8s_triple#*.}
K8S_MINOR=${k8s_rest%%.*}
K8S_STAGING_VERSION=v0.${k8s_rest}

MANIFEST="kubernetes=$KUBERNETES_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION kubeconform=$KUBECONFORM_VERSION go=$GO_VERSION recipe=$RECIPE_REVISION"
KEY=$(printf '%s' "$MANIFEST" | sha256sum | cut -c1-12)
CACHE_ROOT=${SIGNET_CP_CACHE:-$HOME/.cache/signet-control-plane}
DIR=$CACHE_ROOT/k8s-$KUBERNETES_VERSION-$KEY
BIN=$DIR/bin
STAMP=$DIR/stamp
TOOLS=(kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager kube-proxy etcd helm kubeconform)
# Schemas are regenerated (cheaply) when the converter changes.
CONVERTER_SUM=$(sha256sum "$SCRIPT_DIR/openapi2jsonschema.py" | cut -c1-16)

complete() {
  [[ -f $STAMP && $(head -n1 "$STAMP") == "$MANIFEST" ]] || return 1
  [[ -f $DIR/schemas/.done && $(cat "$DIR/schemas/.done") == "$CONVERTER_SUM" ]] || return 1
  local t
  for t in "${TOOLS[@]}"; do [[ -x $BIN/$t ]] || return 1; done
}

if complete; then
  log "cached: $MANIFEST"
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN"
# One builder at a time per cache folder; a second caller waits, then reuses.
exec 9>"$DIR/.lock"
if ! flock -n 9; then
  log "another build holds $DIR/.lock; waiting for it"
  flock 9
fi
if complete; then
  log "cached (built by a concurrent run): $MANIFEST"
  echo "$BIN"
  exit 0
fi

log "building $MANIFEST"
log "cache folder: $DIR"
TIMES=$DIR/build-times.txt
SRC=$DIR/src
mkdir -p "$SRC"

# go mod download outside any module; prints the module's folder.
mod_dir() {
  (cd "$SRC" && GOFLAGS= "$GO" mod download -json "$1@$2") |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["Dir"])'
}

# Generate a wrapper module that requires MODULE@VERSION, copying its go and
# godebug lines, and pinning every replace directive that points into the
# module's own tree (./staging/..., ../api) to the released module of
# REPLACE_VERSION (or, when REPLACE_VERSION is "require", to the version the
# module itself requires, as for etcd's sibling modules).
# Usage: make_wrapper NAME MODULE VERSION REPLACE_VERSION
make_wrapper() {
  local name=$1 module=$2 version=$3 replace_version=$4
  local dir=$SRC/$name
  local gomod
  gomod=$(cd "$SRC" && GOFLAGS= "$GO" mod download -json "$module@$version" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(d["Error"]) if d.get("Error") else print(d["GoMod"])')
  rm -rf "$dir"
  mkdir -p "$dir"
  "$GO" mod edit -json "$gomod" >"$dir/upstream-go.mod.json"
  python3 - "$dir/upstream-go.mod.json" "$name" "$module" "$version" "$replace_version" >"$dir/go.mod" <<'PY'
import json, sys
path, name, module, version, replace_version = sys.argv[1:6]
with open(path, encoding="utf-8") as handle:
    mod = json.load(handle)
required = {r["Path"]: r["Version"] for r in mod.get("Require") or []}
lines = ["module signet.invalid/control-plane/" + name, "", "go " + mod["Go"]]
for g in mod.get("GoDebug") or []:
    lines.append("godebug %s=%s" % (g["Key"], g["Value"]))
lines += ["", "require %s %s" % (module, version), ""]
for r in mod.get("Replace") or []:
    old, new = r["Old"]["Path"], r["New"]
    # Only directory replacements (./staging/..., ../api) need pinning; they
    # are ignored for a dependency and would leave v0.0.0 requirements.
    if new.get("Version") or not new["Path"].startswith(".") or "FORBIDDEN" in new["Path"]:
        continue
    pin = required.get(old) if replace_version == "require" else replace_version
    if pin:
        lines.append("replace %s => %s %s" % (old, old, pin))
print("\n".join(lines))
PY
  log "wrapper module $dir/go.mod: $(grep -c '^replace' "$dir/go.mod" || true) replace lines"
}

# Usage: go_build NAME WRAPPER PACKAGE LDFLAGS
go_build() {
  local name=$1 wrapper=$2 package=$3 ldflags=$4
  if [[ -x $BIN/$name ]]; then
    log "$name: already built"
    return
  fi
  local tmp start
  tmp=$(mktemp -d "$DIR/tmp.$name.XXXXXX")
  start=$SECONDS
  log "$name: go build $package (this can take several minutes)"
  (cd "$SRC/$wrapper" &&
    GOFLAGS="-mod=mod -buildvcs=false" "$GO" build -trimpath -ldflags "-s -w $ldflags" \
      -o "$tmp/$name" "$package") >&2 || { rm -rf "$tmp"; die "$name: build failed"; }
  mv -f "$tmp/$name" "$BIN/$name"
  rmdir "$tmp"
  local took=$((SECONDS - start))
  log "$name: built in ${took}s, $(du -h "$BIN/$name" | cut -f1)"
  printf '%s\t%ss\t%s\n' "$name" "$took" "$(stat -c %s "$BIN/$name")" >>"$TIMES"
}

# ---- kube-apiserver, kubectl and the node's components -----------------------------
K8S_INFO_TIME=$(cd "$SRC" && GOFLAGS= "$GO" mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
  python3 -c 'import json,sys,pathlib; d=json.load(sys.stdin); print(json.loads(pathlib.Path(d["Info"]).read_text())["Time"])')
K8S_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
  K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$K8S_INFO_TIME"
done
K8S_TOOLS=(kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager kube-proxy)
for t in "${K8S_TOOLS[@]}"; do
  if [[ ! -x $BIN/$t ]]; then
    make_wrapper kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION" "$K8S_STAGING_VERSION"
    break
  fi
done
go_build kube-apiserver kubernetes k8s.io/kubernetes/cmd/kube-apiserver "$K8S_LDFLAGS"
go_build kubectl kubernetes k8s.io/kubernetes/cmd/kubectl "$K8S_LDFLAGS"
# The node's kubelet (tests/node/): same module, same flags. Static like the
# others (CGO_ENABLED=0), as upstream releases it; about 1.5 GB peak memory.
go_build kubelet kubernetes k8s.io/kubernetes/cmd/kubelet "$K8S_LDFLAGS"
# The rest of the node (recipe 3): the scheduler places the chart's pods,
# the controller-manager runs Deployments, StatefulSets, Jobs, service
# accounts and garbage collection, and kube-proxy routes Service IPs.
go_build kube-scheduler kubernetes k8s.io/kubernetes/cmd/kube-scheduler "$K8S_LDFLAGS"
go_build kube-controller-manager kubernetes k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_LDFLAGS"
go_build kube-proxy kubernetes k8s.io/kubernetes/cmd/kube-proxy "$K8S_LDFLAGS"

# ---- etcd ---------------------------------------------------------------------
# The server module's main package is etcd itself. Its go.mod replaces its
# sibling modules (api, client, pkg, raft) with ../ paths; pin them to the
# versions it requires, which are the same release.
if [[ ! -x $BIN/etcd ]]; then
  make_wrapper etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" require
fi
go_build etcd etcd go.etcd.io/etcd/server/v3 ""

# ---- helm -----------------------------------------------------------------------
# helm's Makefile derives the Kubernetes version it assumes (for
# .Capabilities.KubeVersion and lint rules) from its k8s.io/client-go; pin it
# to the kube-apiserver built above and warn if helm's libraries differ.
if [[ ! -x $BIN/helm ]]; then
  make_wrapper helm helm.sh/helm/v3 "$HELM_VERSION" require
  helm_client_go=$(cd "$SRC/helm" && GOFLAGS=-mod=mod "$GO" list -m -f '{{.Version}}' k8s.io/client-go)
  helm_minor=${helm_client_go#v0.}
  helm_minor=${helm_minor%%.*}
  if [[ $helm_minor != "$K8S_MINOR" ]]; then
    log "warning: helm $HELM_VERSION is built on k8s.io/client-go $helm_client_go, kube-apiserver is $KUBERNETES_VERSION"
  fi
fi
HELM_LDFLAGS="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  HELM_LDFLAGS+=" -X $pkg.k8sVersionMajor=$K8S_MAJOR -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
go_build helm helm helm.sh/helm/v3/cmd/helm "$HELM_LDFLAGS"

# ---- kubeconform and its schemas ------------------------------------------------
if [[ ! -x $BIN/kubeconform ]]; then
  make_wrapper kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" require
fi
go_build kubeconform kubeconform github.com/yannh/kubeconform/cmd/kubeconform \
  "-X main.version=$KUBECONFORM_VERSION"

if [[ ! -f $DIR/schemas/.done || $(cat "$DIR/schemas/.done") != "$CONVERTER_SUM" ]]; then
  k8s_dir=$(mod_dir k8s.io/kubernetes "$KUBERNETES_VERSION")
  tmp=$(mktemp -d "$DIR/tmp.schemas.XXXXXX")
  start=$SECONDS
  python3 "$SCRIPT_DIR/openapi2jsonschema.py" "$k8s_dir/api/openapi-spec/swagger.json" "$tmp" "$KUBERNETES_VERSION"
  chmod 755 "$tmp"
  echo "$CONVERTER_SUM" >"$tmp/.done"
  rm -rf "$DIR/schemas"
  mv "$tmp" "$DIR/schemas"
  log "schemas: generated in $((SECONDS - start))s under $DIR/schemas"
fi

for t in "${TOOLS[@]}"; do [[ -x $BIN/$t ]] || die "$t is missing after the build"; done
{
  echo "$MANIFEST"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m) with $GO_VERSION"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"
log "done; times and sizes in $TIMES"
echo "$BIN"
