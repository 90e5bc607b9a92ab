#!/usr/bin/env python3
"""Photo-like handwritten digits for `kiln serve`: how much accuracy /predict loses when a digit
comes as a phone photo of paper instead of a clean 28x28 MNIST image.

For N digits taken from MNIST's *training* file (the last 10,000 by default, so a model trained
on a `data.limit_train` prefix has not seen them; the test set stays untouched), it makes a
photo version: the digit upscaled (bicubic) to a random 150-400 px, placed at a random spot on
a larger sheet of grey, slightly tinted paper with a lighting gradient and a vignette, in dark
ink of random strength, with gaussian noise and a slight blur, saved as an RGB JPEG at quality
70-85. Every photo is fixed by --seed. The same digits are also sent clean, as 28x28 PNGs (which
`kiln serve` uses as they are). It then starts each given server binary on each given model
(127.0.0.1 only), POSTs both sets to /predict as base64 instances, and prints the accuracy of
each and the gap, one line per (binary, model).

    python3 -m venv .ci-venv && .ci-venv/bin/pip install pillow numpy
    .ci-venv/bin/python scripts/photo_digits.py --kiln /tmp/kiln-before --kiln target/debug/kiln \\
        --model experiments/mnist-mlp/<run> --n 500

--save DIR writes the first --save-count photos as JPEGs there (and, with --explain, what the
server fitted them to, as PNGs, for the binaries that answer `"explain": true`).
"""

import argparse
import base64
import gzip
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter


def read_idx(path: str, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=offset)


def photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A JPEG of `digit` (28x28, ink bright) written in dark ink on grey paper."""
    side = int(rng.integers(150, 401))
    big = np.asarray(
        Image.fromarray(digit).resize((side, side), Image.BICUBIC), dtype=np.float64
    ).clip(0, 255) / 255.0
    w = side + int(rng.integers(40, 401))
    h = side + int(rng.integers(40, 401))
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    ys, xs = np.mgrid[0:h, 0:w]
    u, v = xs / w - 0.5, ys / h - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    paper = (
        rng.uniform(150, 215)
        + rng.uniform(0, 30) * (np.cos(angle) * u + np.sin(angle) * v) * 2
        - rng.uniform(0, 60) * (u * u + v * v) * 2
    )
    alpha = np.zeros((h, w))
    alpha[top : top + side, left : left + side] = big
    ink = rng.uniform(20, 70)
    grey = paper - (paper - ink) * alpha * rng.uniform(0.85, 1.0)
    tint = np.array([1.0, rng.uniform(0.96, 1.0), rng.uniform(0.88, 0.97)])
    rgb = grey[:, :, None] * tint[None, None, :]
    rgb += rng.normal(0, rng.uniform(4, 14), size=rgb.shape)
    image = Image.fromarray(rgb.clip(0, 255).round().astype(np.uint8), "RGB")
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.8)))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=int(rng.integers(70, 86)))
    return out.getvalue()


def png(digit: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(digit).save(out, "PNG")
    return out.getvalue()


class Server:
    """`kiln serve` on a free loopback port, stopped on exit."""

    def __init__(self, kiln: str, model: str, port: int):
        self.port = port
        self.config = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        self.config.write(
            f'addr = "127.0.0.1:{port}"\n[rate_limit]\nenabled = false\n'
            "[limits]\nrequest_timeout_ms = 60000\n"
        )
        self.config.close()
        env = dict(os.environ, KILN_LOG="warn")
        self.proc = subprocess.Popen(
            [kiln, "serve", "--model", model, "--config", self.config.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kiln} serve exited: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        raise RuntimeError(f"{kiln} serve did not become ready")

    def predict(self, images: list, explain: bool) -> list:
        body = {"instances": [base64.b64encode(b).decode() for b in images]}
        if explain:
            body["explain"] = True
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        conn.request("POST", "/predict", json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"/predict answered {resp.status}: {answer}")
        return answer["predictions"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        os.unlink(self.config.name)


def accuracy(server: Server, images: list, labels: np.ndarray, batch: int, explain: bool):
    predictions = []
    for i in range(0, len(images), batch):
        predictions += server.predict(images[i : i + batch], explain)
    right = sum(int(p["class"]) == int(l) for p, l in zip(predictions, labels))
    return right / len(labels), predictions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kiln", action="append", required=True, help="server binary (repeatable)")
    ap.add_argument("--model", action="append", required=True, help="run or artifact (repeatable)")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--first", type=int, default=50000, help="first training index to sample from")
    ap.add_argument("--data", default="datasets/mnist")
    ap.add_argument("--port", type=int, default=18191)
    ap.add_argument("--batch", type=int, default=16, help="instances per request")
    ap.add_argument("--save", help="directory for example photos (and fitted inputs)")
    ap.add_argument("--save-count", type=int, default=12)
    ap.add_argument("--explain", action="store_true", help="ask for fitted inputs (new servers)")
    args = ap.parse_args()

    images = read_idx(f"{args.data}/train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(f"{args.data}/train-labels-idx1-ubyte.gz", 8)
    rng = np.random.default_rng(args.seed)
    picks = rng.choice(np.arange(args.first, len(images)), size=args.n, replace=False)
    digits, truth = images[picks], labels[picks]
    photos = [photo(d, rng) for d in digits]
    cleans = [png(d) for d in digits]
    sizes = [Image.open(io.BytesIO(p)).size for p in photos]
    print(
        f"{args.n} digits from training indices >= {args.first} (seed {args.seed}); photos "
        f"{min(s[0] for s in sizes)}-{max(s[0] for s in sizes)} px wide, "
        f"{sum(map(len, photos)) // len(photos) // 1024} KiB JPEG on average",
        file=sys.stderr,
    )
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        for i, p in enumerate(photos[: args.save_count]):
            with open(f"{args.save}/photo-{i:03}-label{truth[i]}.jpg", "wb") as f:
                f.write(p)

    print(f"{'binary':<28} {'model':<44} {'clean':>7} {'photo':>7} {'gap':>7}")
    for m, model in enumerate(args.model):
        for k, kiln in enumerate(args.kiln):
            server = Server(kiln, model, args.port)
            try:
                clean, _ = accuracy(server, cleans, truth, args.batch, False)
                try:
                    got, preds = accuracy(server, photos, truth, args.batch, args.explain)
                except RuntimeError:  # a server that does not know "explain"
                    got, preds = accuracy(server, photos, truth, args.batch, False)
            finally:
                server.close()
            if args.save:
                for i, p in enumerate(preds[: args.save_count]):
                    if "fitted_png" in p:
                        name = f"{args.save}/fitted-m{m}-k{k}-{i:03}-label{truth[i]}-got{p['class']}.png"
                        with open(name, "wb") as f:
                            f.write(base64.b64decode(p["fitted_png"]))
            print(
                f"{kiln[-28:]:<28} {model[-44:]:<44} {100 * clean:6.1f}% {100 * got:6.1f}% "
                f"{100 * (got - clean):+6.1f}"
            )


if __name__ == "__main__":
    main()
