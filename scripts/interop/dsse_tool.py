"""DSSE interop helper for mlvault's tests, with securesystemslib.

sign OUTDIR PAYLOAD_FILE: make an ed25519 key, write OUTDIR/key.pub.pem and
    print a DSSE envelope over the payload (in-toto payload type), signed by
    securesystemslib's CryptoSigner.
verify PUB_PEM ENVELOPE_FILE: verify an envelope with securesystemslib;
    exit 0 when a signature by the key verifies, 1 otherwise. securesystemslib
    finds a key's signature by key id, so the key gets mlvault's documented
    id (docs/formats.md: "ed25519:" and the hex SHA-256 of the 32 public key
    bytes), computed here.
"""
import hashlib
import json
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def sign(outdir, payload_file):
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with open(f"{outdir}/key.pub.pem", "wb") as f:
        f.write(pem)
    signer = CryptoSigner(private)
    with open(payload_file, "rb") as f:
        payload = f.read()
    env = Envelope(payload=payload, payload_type=PAYLOAD_TYPE, signatures={})
    env.sign(signer)
    print(json.dumps(env.to_dict()))


def verify(pub_pem, envelope_file):
    with open(pub_pem, "rb") as f:
        public = serialization.load_pem_public_key(f.read())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    keyid = "ed25519:" + hashlib.sha256(raw).hexdigest()
    key = SSlibKey.from_crypto(public, keyid=keyid, scheme="ed25519")
    with open(envelope_file) as f:
        env = Envelope.from_dict(json.load(f))
    try:
        env.verify([key], 1)
    except Exception as e:  # noqa: BLE001 - any failure is a refusal
        print(f"refused: {e}")
        sys.exit(1)
    print("verified")


if __name__ == "__main__":
    {"sign": sign, "verify": verify}[sys.argv[1]](*sys.argv[2:])
