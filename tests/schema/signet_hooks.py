"""Schemathesis hooks for Signet: every request is signed as docs/protocol.md says.

Loaded by tests/schema/run.sh with SCHEMATHESIS_HOOKS=signet_hooks. The
identity that signs is the `signet` CLI's identity file named by
SIGNET_SCHEMA_IDENTITY (an admin, an agent or a machine); without it the
requests go out unsigned.

Signing happens on the prepared request, as late as it can: after
Schemathesis has serialized the body and encoded the query, `requests`
sends exactly `path_url` as the request target and exactly `body` as the
body, which is what the canonical message must cover. Schemathesis'
`before_call` hook runs before that serialization, so it cannot sign.

`python3 signet_hooks.py` checks the signing against
docs/protocol-vectors.json (import does too, and refuses to sign if it fails).
"""

import base64
import hashlib
import json
import os
import pathlib
import sys
import time

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

VECTORS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol-vectors.json"


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(method: str, target: str, body: bytes, timestamp: str, nonce: str, key_id: str) -> bytes:
    """The seven lines of docs/protocol.md, joined by a newline, as UTF-8."""
    lines = ["signet-v1", method.upper(), target, hashlib.sha256(body).hexdigest(), timestamp, nonce, key_id]
    return "\n".join(lines).encode("utf-8")


def check_vectors() -> int:
    """Reproduces every vector byte for byte; the number checked."""
    vectors = json.loads(VECTORS.read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vectors["seed_hex"]))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert b64url(public) == vectors["public_key"], "public key differs from the vectors"
    for v in vectors["vectors"]:
        message = canonical(v["method"], v["target"], v["body"].encode(), v["timestamp"], v["nonce"], v["key_id"])
        assert message == v["canonical"].encode(), f"canonical message differs for {v['target']}"
        assert b64url(key.sign(message)) == v["signature"], f"signature differs for {v['target']}"
    return len(vectors["vectors"])


check_vectors()


class Signer:
    def __init__(self, path: str):
        identity = json.loads(pathlib.Path(path).read_text())
        self.key_id = identity["id"]
        self.key = Ed25519PrivateKey.from_private_bytes(b64url_decode(identity["private_key"]))

    def sign(self, request: requests.PreparedRequest) -> None:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
            request.body = body
            request.headers["Content-Length"] = str(len(body))
        elif not isinstance(body, bytes):
            raise TypeError(f"cannot sign a streamed body ({type(body).__name__})")
        timestamp = str(int(time.time()))
        nonce = b64url(os.urandom(16))
        message = canonical(request.method, request.path_url, body, timestamp, nonce, self.key_id)
        request.headers["Signet-Key"] = self.key_id
        request.headers["Signet-Timestamp"] = timestamp
        request.headers["Signet-Nonce"] = nonce
        request.headers["Signet-Signature"] = b64url(self.key.sign(message))


if os.environ.get("SIGNET_SCHEMA_IDENTITY"):
    _signer = Signer(os.environ["SIGNET_SCHEMA_IDENTITY"])
    _send = requests.Session.send

    def _signed_send(self, request, **kwargs):
        _signer.sign(request)
        return _send(self, request, **kwargs)

    requests.Session.send = _signed_send


if __name__ == "__main__":
    print(f"signing reproduces {check_vectors()} vectors of {VECTORS.name}")
    sys.exit(0)
