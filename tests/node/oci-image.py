#!/usr/bin/env python3
"""Write a one-layer OCI image archive from local files, without docker.

    oci-image.py --name signet.invalid/signet-init:node --out signet-init.tar \
        --entrypoint '["/signet-init"]' --cmd '["run"]' --user 65532:65532 --with-libs --strip \
        /path/to/signet-init:/signet-init

Each FILE is SRC:DEST (DEST absolute inside the image). With --with-libs,
the shared libraries `ldd` lists for every executable FILE (and the dynamic
loader) are added at the same paths, so a glibc-linked binary runs in an
otherwise empty image. With --strip, executables lose their debug sections
(`strip --strip-debug`), which makes a debug build's image small. The layer is deterministic (sorted, owner 0:0,
mtime 0), so the same inputs give the same image digest.

The archive is an OCI image layout (oci-layout, index.json, blobs/sha256/)
as a tar; index.json names the image with the `io.containerd.image.name`
annotation, which `ctr images import` uses as the image's name.
Standard library only.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


def shared_libraries(path):
    """Absolute paths of what the dynamic loader maps for `path` (none for a
    static binary)."""
    result = subprocess.run(["ldd", path], capture_output=True, text=True)
    if result.returncode != 0:
        # "not a dynamic executable" (static) exits 1: nothing to add.
        if "not a dynamic executable" in result.stdout + result.stderr or "statically linked" in result.stdout:
            return []
        sys.exit("ldd %s failed: %s" % (path, result.stderr.strip()))
    libs = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            sys.exit("%s needs a library ldd cannot find: %s" % (path, line))
        match = re.match(r"^(?:\S+ => )?(/\S+) \(0x[0-9a-f]+\)$", line)
        if match:
            libs.append(match.group(1))
    return libs


def add_parents(tar, dest, seen):
    parts = dest.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        name = "/".join(parts[:i])
        if name in seen:
            continue
        seen.add(name)
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)


def without_debug_info(path):
    """The bytes of ELF file `path` without its debug sections (a debug
    build's binary shrinks about six times; the code is unchanged)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "stripped")
        result = subprocess.run(["strip", "--strip-debug", "-o", out, path], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit("strip --strip-debug %s failed: %s" % (path, result.stderr.strip()))
        with open(out, "rb") as handle:
            return handle.read()


def layer(files, strip):
    """The layer tar (bytes) of {dest: src}."""
    buffer = io.BytesIO()
    seen = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dest in sorted(files):
            src = files[dest]
            add_parents(tar, dest, seen)
            real = os.path.realpath(src)
            executable = os.stat(real).st_mode & 0o111
            if strip and executable:
                data = without_debug_info(real)
            else:
                with open(real, "rb") as handle:
                    data = handle.read()
            info = tarfile.TarInfo(dest.strip("/"))
            info.size = len(data)
            # Readable by any user (signet-init runs as 65532), writable by none.
            info.mode = 0o555 if executable else 0o444
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def blob(out, data):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    info.mode = 0o644
    out.addfile(info, io.BytesIO(data))
    return "sha256:" + digest, len(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="image name, e.g. signet.invalid/x:tag")
    parser.add_argument("--out", required=True, help="archive to write")
    parser.add_argument("--entrypoint", type=json.loads, required=True, help='JSON array, e.g. \'["/app", "run"]\'')
    parser.add_argument("--cmd", type=json.loads, default=[], help="JSON array")
    parser.add_argument("--user", default="", help="uid[:gid] the image runs as")
    parser.add_argument("--env", action="append", default=[], help="NAME=value (repeat)")
    parser.add_argument("--with-libs", action="store_true", help="add the shared libraries of executables")
    parser.add_argument("--strip", action="store_true", help="drop the debug sections of executables")
    parser.add_argument("files", nargs="+", metavar="SRC:DEST")
    args = parser.parse_args()

    for value in (args.entrypoint, args.cmd):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            sys.exit("--entrypoint and --cmd take a JSON array of strings")
    files = {}
    for spec in args.files:
        src, sep, dest = spec.rpartition(":")
        if not sep or not dest.startswith("/") or not os.path.isfile(src):
            sys.exit("bad file %r: want SRC:DEST with an existing SRC and an absolute DEST" % spec)
        files[dest] = src
    if args.with_libs:
        for src in list(files.values()):
            if os.access(src, os.X_OK):
                for lib in shared_libraries(src):
                    files.setdefault(lib, lib)

    layer_bytes = layer(files, args.strip)
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": args.entrypoint,
            "Cmd": args.cmd or None,
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] + args.env,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/node/oci-image.py"}],
    }
    if args.user:
        config["config"]["User"] = args.user
    if config["config"]["Cmd"] is None:
        del config["config"]["Cmd"]

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        layer_digest, layer_size = blob(out, layer_bytes)
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest, config_size = blob(out, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        manifest_digest, manifest_size = blob(out, manifest_bytes)
        tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
        index = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest,
                    "size": manifest_size,
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {
                        "io.containerd.image.name": args.name,
                        "org.opencontainers.image.ref.name": tag,
                    },
                }
            ],
        }
        for name, data in [
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print("%s %s %d files, layer %d bytes" % (args.name, manifest_digest, len(files), layer_size))


if __name__ == "__main__":
    main()
