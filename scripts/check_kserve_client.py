#!/usr/bin/env python3
"""Checks a running `kiln serve` with a KServe v2 client we did not write: the `tritonclient`
package's HTTP client, used as its documentation shows, with its defaults (binary tensors).

    pip install 'tritonclient[http]'
    kiln serve --model experiments/<name>/<run> --addr 127.0.0.1:8080 &
    python3 scripts/check_kserve_client.py --url 127.0.0.1:8080 --model <name> --min-accuracy 0.85

Sends real MNIST test digits (datasets/mnist) as UINT8 [N,28,28] binary tensors and as FP32
[N,784] JSON tensors, checks that both give the same probabilities, and that the predicted
classes reach --min-accuracy. Exits non-zero, saying what failed.
"""

import argparse
import gzip
import sys

import numpy as np
import tritonclient.http as httpclient


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:8080")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default="datasets/mnist")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--min-accuracy", type=float, default=0.9)
    args = ap.parse_args()

    images = read_idx(f"{args.data}/t10k-images-idx3-ubyte.gz")[: args.count]
    labels = read_idx(f"{args.data}/t10k-labels-idx1-ubyte.gz")[: args.count]

    client = httpclient.InferenceServerClient(url=args.url)
    problems = []
    if not client.is_server_live():
        problems.append("server is not live")
    if not client.is_server_ready():
        problems.append("server is not ready")
    if not client.is_model_ready(args.model):
        problems.append(f"model {args.model} is not ready")
    meta = client.get_model_metadata(args.model)
    classes = meta["outputs"][0]["shape"][1]

    predicted = []
    for start in range(0, len(images), args.batch):
        batch = images[start : start + args.batch]
        # UINT8 [N,28,28], binary tensor data (the client's default).
        inp = httpclient.InferInput("input", list(batch.shape), "UINT8")
        inp.set_data_from_numpy(batch)
        outs = [httpclient.InferRequestedOutput("probabilities"), httpclient.InferRequestedOutput("class"),
                httpclient.InferRequestedOutput("label")]
        result = client.infer(args.model, [inp], outputs=outs)
        probs = result.as_numpy("probabilities")
        cls = result.as_numpy("class")
        label = result.as_numpy("label")
        if probs.shape != (len(batch), classes):
            problems.append(f"probabilities shape {probs.shape}")
            break
        if not np.array_equal(np.argmax(probs, axis=1), cls):
            problems.append("class output disagrees with argmax of probabilities")
        if len(label) != len(batch):
            problems.append(f"label output has {len(label)} entries")

        # The same images as FP32 [N,784] in [0,1], JSON tensor data.
        flat = (batch.reshape(len(batch), 784).astype(np.float32)) / 255.0
        inp2 = httpclient.InferInput("input", list(flat.shape), "FP32")
        inp2.set_data_from_numpy(flat, binary_data=False)
        out2 = [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
        probs2 = client.infer(args.model, [inp2], outputs=out2).as_numpy("probabilities")
        if not np.allclose(probs, probs2, atol=1e-5):
            problems.append("UINT8 binary and FP32 JSON requests disagree")
        predicted.extend(cls.tolist())

    accuracy = float(np.mean(np.array(predicted) == labels[: len(predicted)]))
    if accuracy < args.min_accuracy:
        problems.append(f"accuracy {accuracy:.4f} below {args.min_accuracy}")
    if problems:
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        return 1
    print(f"ok: tritonclient {httpclient.__name__}: {len(predicted)} digits, accuracy {accuracy:.4f}, "
          f"binary UINT8 and JSON FP32 agree, model {args.model} version {meta['versions'][0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
