#!/usr/bin/env python3
"""Checks a `kiln export --format onnx` file with tools kiln did not write: the `onnx` package's
checker (full_check, which runs shape inference) and ONNX Runtime, whose answers on real MNIST
test digits must match what `kiln serve` answers on `POST /predict` for the same model.

    .ci-venv/bin/pip install onnx onnxruntime
    target/debug/kiln export RUN_DIR --format onnx -o /tmp/model.onnx
    .ci-venv/bin/python scripts/check_onnx.py --model RUN_DIR --onnx /tmp/model.onnx

Feeds the first --count test images to both as raw 0-255 pixels (the ONNX graph normalises
them itself), prints the largest absolute difference between the probabilities, and exits
non-zero when it exceeds --tolerance (1e-5) or any predicted class differs.
"""

import argparse
import gzip
import json
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime

from kiln_predict import served_probabilities

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 256  # the server's default limits.max_instances


def default_kiln() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "debug", "kiln")


def read_idx_images(path: str, count: int) -> np.ndarray:
    """The first `count` images of an IDX image file (gzip or raw), as uint8 [N, rows, cols]."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, n, rows, cols = struct.unpack(">IIII", f.read(16))
        if magic != 2051:
            raise SystemExit(f"{path}: magic {magic}, expected 2051 (IDX images)")
        count = min(count, n)
        data = f.read(count * rows * cols)
    if len(data) != count * rows * cols:
        raise SystemExit(f"{path}: truncated ({len(data)} bytes of {count * rows * cols})")
    return np.frombuffer(data, dtype=np.uint8).reshape(count, rows, cols)


def read_idx_labels(path: str, count: int) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        magic, n = struct.unpack(">II", f.read(8))
        if magic != 2049:
            raise SystemExit(f"{path}: magic {magic}, expected 2049 (IDX labels)")
        return np.frombuffer(f.read(min(count, n)), dtype=np.uint8)


def check_structure(model: onnx.ModelProto) -> list:
    """What the export promises beyond validity: opset 18, a symbolic batch axis, metadata."""
    problems = []
    opsets = {o.domain: o.version for o in model.opset_import}
    if opsets.get("", opsets.get("ai.onnx")) != 18:
        problems.append(f"opset_import {opsets}, expected ai.onnx 18")
    graph = model.graph
    if len(graph.input) != 1:
        problems.append(f"{len(graph.input)} graph inputs, expected 1")
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        problems.append(f"input batch dimension is not symbolic: {batch}")
    outputs = [o.name for o in graph.output]
    if outputs != ["logits", "probabilities"]:
        problems.append(f"outputs {outputs}, expected logits, probabilities")
    props = {p.key: p.value for p in model.metadata_props}
    for key in ["kiln.name", "kiln.version", "kiln.class_names", "kiln.input", "kiln.normalization"]:
        if key not in props:
            problems.append(f"metadata {key} missing (have {sorted(props)})")
    if "kiln.class_names" in props:
        json.loads(props["kiln.class_names"])
    return problems


def kiln_probabilities(kiln: str, model: str, device: str, images: np.ndarray) -> tuple:
    """Probabilities from `kiln serve`'s POST /predict, and the model version it names."""
    flat = images.reshape(len(images), -1).tolist()
    probs, version = served_probabilities(kiln, model, device, flat, BATCH)
    return np.asarray(probs, dtype=np.float64), version


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kiln", default=default_kiln(), help="the kiln binary (default: %(default)s)")
    parser.add_argument("--model", required=True, help="run or artifact directory the file was exported from")
    parser.add_argument("--onnx", required=True, help="the exported .onnx file")
    parser.add_argument("--count", type=int, default=1000, help="test digits to compare")
    parser.add_argument("--data", default=os.path.join(REPO, "datasets/mnist"), help="MNIST directory")
    parser.add_argument("--device", default="auto", help="kiln serve --device")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="largest allowed |difference|")
    args = parser.parse_args()

    model = onnx.load(args.onnx)
    onnx.checker.check_model(model, full_check=True)
    problems = check_structure(model)
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        return 1
    props = {p.key: p.value for p in model.metadata_props}
    print(f"onnx.checker (full_check): ok; {props['kiln.name']} {props['kiln.version']}, "
          f"{len(model.graph.node)} nodes: {' '.join(n.op_type for n in model.graph.node)}")

    images = read_idx_images(os.path.join(args.data, "t10k-images-idx3-ubyte.gz"), args.count)
    labels = read_idx_labels(os.path.join(args.data, "t10k-labels-idx1-ubyte.gz"), len(images))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value for d in dims[1:]]
    if shape[1:] != list(images.shape[1:]) or shape[0] != 1:
        raise SystemExit(f"the model takes [batch, {shape}], the data is {images.shape[1:]} grayscale")

    session = onnxruntime.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    pixels = images.astype(np.float32).reshape(len(images), *shape)  # raw 0-255
    logits, ort_probs = session.run(["logits", "probabilities"], {session.get_inputs()[0].name: pixels})
    if logits.shape != ort_probs.shape or logits.shape[0] != len(images):
        raise SystemExit(f"ONNX Runtime output shapes {logits.shape}, {ort_probs.shape}")

    kiln_probs, served = kiln_probabilities(args.kiln, args.model, args.device, images)
    # kiln serve names the manifest's version plus a prefix of the weights' SHA-256.
    exported, sha = props["kiln.version"], props.get("kiln.weights_sha256", "")
    suffix = served[len(exported):].lstrip("-")
    if not served.startswith(exported) or not suffix or not sha.startswith(suffix):
        raise SystemExit(f"kiln serves model version {served}; the ONNX file is {exported}, weights {sha}")
    if kiln_probs.shape != ort_probs.shape:
        raise SystemExit(f"kiln probabilities {kiln_probs.shape}, ONNX Runtime {ort_probs.shape}")

    diff = np.abs(kiln_probs - ort_probs.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
    ort_class = ort_probs.argmax(axis=1)
    kiln_class = kiln_probs.argmax(axis=1)
    disagree = int((ort_class != kiln_class).sum())
    accuracy = float((ort_class == labels).mean())
    print(f"{len(images)} MNIST test digits through ONNX Runtime {onnxruntime.__version__} and kiln /predict:")
    print(f"  max |probability difference| = {diff.max():.3g} (image {worst[0]}, class {worst[1]})")
    print(f"  predicted classes differing: {disagree}; ONNX accuracy on these digits {accuracy:.4f}")
    failed = False
    if diff.max() > args.tolerance:
        print(f"FAIL: difference {diff.max():.3g} exceeds {args.tolerance:g}", file=sys.stderr)
        failed = True
    if disagree:
        print(f"FAIL: {disagree} predicted classes differ", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
