#!/usr/bin/env bash
# Build Signet's container images from local binaries, without docker or a
# registry, and optionally import them into a node's containerd.
#
#   tests/node/images.sh OUTDIR                # writes OUTDIR/*.tar
#   tests/node/images.sh --import WORKDIR OUTDIR   # ... and imports them into
#                                              # the node of tests/node/start.sh WORKDIR
#
# Images (tag: $SIGNET_IMAGE_TAG, default "node"):
#
# | image                              | entrypoint                   | from |
# | ---------------------------------- | ---------------------------- | ---- |
# | signet.invalid/signet-init:TAG     | /signet-init (the webhook's contract path) | signet-init |
# | signet.invalid/signet-vault:TAG    | /signet-vault                | signet-vault |
# | signet.invalid/signet-operator:TAG | /signet-operator             | signet-operator |
# | signet.invalid/signet-rotator:TAG  | /signet-rotator              | signet-rotator |
# | signet.invalid/node-app:TAG        | /signet-node-app             | signet-node-app (tests/e2e) |
# | signet.invalid/pause:TAG           | /signet-node-app pause       | the same binary: the node's sandbox ("pause") image |
#
# $SIGNET_IMAGES picks some of them (space-separated: signet-init
# signet-vault signet-operator signet-rotator node-app pause; default all).
#
# The binaries come from $SIGNET_BIN_DIR (default: target/release) and
# $SIGNET_NODE_APP (default: signet-node-app in that folder). Each image is
# one layer holding the binary without its debug sections plus, for a
# glibc-linked binary, the shared libraries `ldd` names (a static binary
# gets none); see oci-image.py. The last stdout line is OUTDIR.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/../.." && pwd)
log() { printf '[node images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

import_wd=
if [[ ${1:-} == --import ]]; then
  [[ $# -ge 2 ]] || die "usage: $0 [--import WORKDIR] OUTDIR"
  import_wd=$2
  shift 2
fi
[[ $# -eq 1 ]] || die "usage: $0 [--import WORKDIR] OUTDIR"
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

BIN_DIR=${SIGNET_BIN_DIR:-$REPO/target/release}
APP=${SIGNET_NODE_APP:-$BIN_DIR/signet-node-app}
TAG=${SIGNET_IMAGE_TAG:-node}
read -r -a IMAGES <<<"${SIGNET_IMAGES:-signet-init signet-vault signet-operator signet-rotator node-app pause}"
source_of() { # IMAGE: the binary it is made from
  case $1 in
    signet-init | signet-vault | signet-operator | signet-rotator) echo "$BIN_DIR/$1" ;;
    node-app | pause) echo "$APP" ;;
    *) die "unknown image $1 (signet-init signet-vault signet-operator signet-rotator node-app pause)" ;;
  esac
}
for name in "${IMAGES[@]}"; do
  binary=$(source_of "$name")
  [[ -x $binary ]] || die "$binary is missing: cargo build --release -p signet-vault -p signet-operator -p signet-init -p signet-rotator -p signet-e2e (or set SIGNET_BIN_DIR / SIGNET_NODE_APP)"
done

start=$SECONDS
for name in "${IMAGES[@]}"; do
  binary=$(source_of "$name")
  case $name in
    # signet-init runs as the distroless `nonroot` user, as the webhook's
    # security context says; the image says so too for other runtimes.
    signet-init) args=(--entrypoint '["/signet-init"]' --cmd '["run"]' --user 65532:65532 "$binary:/signet-init") ;;
    signet-vault | signet-operator | signet-rotator) args=(--entrypoint "[\"/$name\"]" --user 65532:65532 "$binary:/$name") ;;
    node-app) args=(--entrypoint '["/signet-node-app"]' "$binary:/signet-node-app") ;;
    pause) args=(--entrypoint '["/signet-node-app", "pause"]' "$binary:/signet-node-app") ;;
  esac
  python3 "$SCRIPT_DIR/oci-image.py" --name "signet.invalid/$name:$TAG" --out "$OUT/$name.tar" \
    --with-libs --strip "${args[@]}" >&2
done
log "built ${#IMAGES[@]} images in $((SECONDS - start))s under $OUT"

if [[ -n $import_wd ]]; then
  [[ -f $import_wd/env ]] || die "no node in $import_wd (no env file): run tests/node/start.sh first"
  sock=$(sed -n 's/^SIGNET_NODE_CONTAINERD=//p' "$import_wd/env")
  [[ -S $sock ]] || die "containerd socket $sock is missing: is the node running?"
  start=$SECONDS
  for name in "${IMAGES[@]}"; do
    ctr --address "$sock" -n k8s.io images import "$OUT/$name.tar" >&2 ||
      die "ctr images import $OUT/$name.tar failed"
  done
  log "imported into $sock in $((SECONDS - start))s"
fi
echo "$OUT"
