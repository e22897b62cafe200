#!/usr/bin/env python3
"""A small adversarial-robustness evaluation of a model pulled from mlvault,
reported as a signed in-toto test-result attestation.

    # a demo model: a linear classifier in safetensors
    python3 examples/eval/robustness.py make-model DIR

    # evaluate what `vault-cli pull` placed in DIR and attest the result
    python3 examples/eval/robustness.py evaluate DIR --sign-key eval.key

`evaluate` reads the manifest the pull verified (DIR/.mlvault/manifest.json),
so the attestation names the exact bytes evaluated (`name@sha256:<manifest
digest>`), not whatever an alias points at later. It loads the first
`.safetensors` file with a `weight` tensor (F32, classes x features) and an
optional `bias` (F32, classes), and computes the certified L-infinity
robustness of the linear classifier argmax(Wx + b) at --epsilon on
--samples inputs drawn uniformly from [-1, 1]^features with a fixed seed: an
input counts as robust when no perturbation of size epsilon can change its
class, that is when for every other class j the margin
(W_y - W_j).x + (b_y - b_j) exceeds epsilon * |W_y - W_j|_1. The result is
PASSED when the robust fraction reaches --min-robust, else FAILED. Anything
it cannot judge (no manifest, no such tensor, another dtype, a malformed
file) stops it with exit 2 and attests nothing.

The statement is signed by `vault-cli attest --sign-key` with the key the
vault trusts for this attestor (`vault-cli attestor add adversarial-eval
eval.key.pub --predicate-type https://in-toto.io/attestation/test-result/v0.1
--namespace NS`). Only the Python standard library is used.
"""

import argparse
import base64
import hashlib
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

TEST_RESULT = "https://in-toto.io/attestation/test-result/v0.1"
MAX_HEADER = 1 << 20


class Refused(Exception):
    """The model cannot be judged."""


def write_safetensors(path, tensors):
    """tensors: name -> (shape, list of floats), written as F32."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        raw = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": shape,
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_tensor(path, name):
    """The F32 tensor `name` of a safetensors file: (shape, values), or None."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) != 8:
            raise Refused(f"{path}: not a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise Refused(f"{path}: header length {n} is out of range")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise Refused(f"{path}: header is not JSON: {e}")
        t = header.get(name)
        if t is None:
            return None
        if t.get("dtype") != "F32":
            raise Refused(f"{path}: `{name}` is {t.get('dtype')}, not F32")
        shape = t.get("shape")
        start, end = t.get("data_offsets", [0, -1])
        count = math.prod(shape) if shape else 1
        if end - start != 4 * count or 8 + n + end > size or start < 0:
            raise Refused(f"{path}: `{name}` offsets do not match its shape")
        f.seek(8 + n + start)
        values = struct.unpack("<%df" % count, f.read(4 * count))
        if not all(math.isfinite(v) for v in values):
            raise Refused(f"{path}: `{name}` holds NaN or infinite values")
        return shape, values


def make_model(out, classes, features, seed):
    rng = random.Random(seed)
    w = [rng.gauss(0.0, 1.0) for _ in range(classes * features)]
    b = [rng.gauss(0.0, 0.1) for _ in range(classes)]
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"),
                      {"weight": ([classes, features], w), "bias": ([classes], b)})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump({"architecture": "linear", "classes": classes, "features": features}, f)
    print(f"wrote a linear classifier ({classes} classes, {features} features) to {out}")


def pulled_version(model_dir):
    """(name, version, manifest digest) of what `vault-cli pull` verified there."""
    path = os.path.join(model_dir, ".mlvault", "manifest.json")
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise Refused(f"{path}: {e} (pull the model with vault-cli first)")
    try:
        env = json.loads(text)
        statement = json.loads(base64.b64decode(env["payload"]))
        pred = statement["predicate"]
        name, version = pred["name"], pred["version"]
    except (ValueError, KeyError, TypeError) as e:
        raise Refused(f"{path}: not an mlvault manifest ({e})")
    return name, version, "sha256:" + hashlib.sha256(text).hexdigest()


def certified_robust_fraction(weight, bias, epsilon, samples, seed):
    (classes, features), w = weight
    b = bias[1] if bias else [0.0] * classes
    if classes < 2:
        raise Refused("a classifier needs at least two classes")
    rows = [w[i * features:(i + 1) * features] for i in range(classes)]
    rng = random.Random(seed)
    robust = 0
    for _ in range(samples):
        x = [rng.uniform(-1.0, 1.0) for _ in range(features)]
        scores = [sum(r[k] * x[k] for k in range(features)) + b[i] for i, r in enumerate(rows)]
        y = max(range(classes), key=lambda i: scores[i])
        ok = True
        for j in range(classes):
            if j == y:
                continue
            margin = scores[y] - scores[j]
            l1 = sum(abs(rows[y][k] - rows[j][k]) for k in range(features))
            if margin <= epsilon * l1:
                ok = False
                break
        robust += ok
    return robust / samples


def evaluate(a):
    name, version, digest = pulled_version(a.model_dir)
    files = sorted(f for f in os.listdir(a.model_dir) if f.endswith(".safetensors"))
    weight = bias = None
    for f in files:
        weight = read_tensor(os.path.join(a.model_dir, f), "weight")
        if weight:
            bias = read_tensor(os.path.join(a.model_dir, f), "bias")
            break
    if not weight or len(weight[0]) != 2:
        raise Refused(f"{a.model_dir}: no 2-D `weight` tensor in a .safetensors file")
    if bias and bias[0] != [weight[0][0]]:
        raise Refused(f"{a.model_dir}: `bias` does not match `weight`")
    frac = certified_robust_fraction(weight, bias, a.epsilon, a.samples, a.seed)
    result = "PASSED" if frac >= a.min_robust else "FAILED"
    test = f"certified-linf-robustness eps={a.epsilon} robust={frac:.4f} min={a.min_robust}"
    predicate = {
        "result": result,
        "configuration": [{"name": "robustness.py", "digest": {
            "sha256": hashlib.sha256(open(__file__, "rb").read()).hexdigest()}}],
        "passedTests": [test] if result == "PASSED" else [],
        "warnedTests": [],
        "failedTests": [test] if result == "FAILED" else [],
    }
    print(f"{name}:{version} ({digest}): robust fraction {frac:.4f} at epsilon {a.epsilon} "
          f"(minimum {a.min_robust}): {result}")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(predicate, f)
        pred_path = f.name
    try:
        cmd = [a.vault_cli, "attest", f"{name}@{digest}", "--predicate-type", TEST_RESULT,
               "--predicate", pred_path, "--sign-key", a.sign_key]
        done = subprocess.run(cmd)
    finally:
        os.unlink(pred_path)
    return done.returncode


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make-model", help="write a demo linear classifier")
    m.add_argument("out")
    m.add_argument("--classes", type=int, default=3)
    m.add_argument("--features", type=int, default=16)
    m.add_argument("--seed", type=int, default=7)
    e = sub.add_parser("evaluate", help="evaluate a pulled model and attest the result")
    e.add_argument("model_dir")
    e.add_argument("--sign-key", required=True, help="the attestor's signing key")
    e.add_argument("--epsilon", type=float, default=0.01)
    e.add_argument("--min-robust", type=float, default=0.9)
    e.add_argument("--samples", type=int, default=1000)
    e.add_argument("--seed", type=int, default=1)
    e.add_argument("--vault-cli", default=os.environ.get("VAULT_CLI", "vault-cli"),
                   help="the vault-cli binary (default $VAULT_CLI, else vault-cli on PATH)")
    a = p.parse_args()
    try:
        if a.command == "make-model":
            make_model(a.out, a.classes, a.features, a.seed)
            return 0
        if not (0 < a.samples <= 1_000_000) or a.epsilon < 0 or not (0 <= a.min_robust <= 1):
            raise Refused("--samples must be 1..1000000, --epsilon >= 0, --min-robust in [0, 1]")
        return evaluate(a)
    except Refused as e:
        print(f"robustness.py: cannot judge: {e}; nothing attested", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
