#!/usr/bin/env python3
"""Cross-backend parity, end to end, through the `kiln` binary: the same artifact served on two
devices must give the same probabilities for the same MNIST test digits, and the same short
training run on each device must land within a band of the other's accuracy.

    cargo build --features wgpu            # then, with Mesa's lavapipe or a GPU present:
    python3 scripts/wgpu_parity.py --kiln target/debug/kiln --model RUN_DIR [--devices cpu wgpu]

Standard library only. Prints one table: max |probability difference|, predicted classes that
differ, the smoke run's validation accuracy and wall time per device. Exits 1 when a difference
exceeds --tolerance or the accuracies differ by more than --accuracy-band. This is a by-hand
check; the parity tests that issue 10 asks CI to run (gradients of one step included) are not
written yet.
"""

import argparse
import gzip
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

BATCH = 64


def test_images(count: int) -> list:
    data = gzip.open("datasets/mnist/t10k-images-idx3-ubyte.gz").read()[16:]
    return [list(data[i * 784 : (i + 1) * 784]) for i in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probabilities(kiln: str, model: str, device: str, images: list) -> list:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        [kiln, "serve", "--model", model, "--addr", f"127.0.0.1:{port}", "--device", device],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"kiln serve --device {device} exited {server.returncode}:\n{log.read().decode()}")
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"kiln serve --device {device} not ready within 120 s")
            time.sleep(0.2)
        out = []
        for start in range(0, len(images), BATCH):
            body = {"instances": images[start : start + BATCH], "scale": "u8", "invert": "no"}
            request = urllib.request.Request(
                f"{base}/predict", json.dumps(body).encode(), {"content-type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=300) as response:
                out.extend(p["probabilities"] for p in json.load(response)["predictions"])
        return out
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def smoke_run(kiln: str, device: str, root: str) -> tuple:
    start = time.monotonic()
    done = subprocess.run(
        [kiln, "train", "--config", "configs/smoke.toml", "--device", device, "--plain",
         "--set", f"experiment.root={root}", "--name", f"parity-{device}"],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"smoke run on {device} failed:\n{done.stderr[-2000:]}")
    run_dir = done.stdout.strip().splitlines()[-1]
    record = json.load(open(f"{run_dir}/run.json"))
    return record["final_metrics"]["valid_accuracy"], time.monotonic() - start, record["device"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kiln", default="target/debug/kiln")
    p.add_argument("--model", required=True, help="a run directory or model artifact")
    p.add_argument("--devices", nargs=2, default=["cpu", "wgpu"])
    p.add_argument("--count", type=int, default=256)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--accuracy-band", type=float, default=0.02)
    a = p.parse_args()
    images = test_images(a.count)
    first, second = (probabilities(a.kiln, a.model, d, images) for d in a.devices)
    diffs = [abs(x - y) for row1, row2 in zip(first, second) for x, y in zip(row1, row2)]
    argmax = lambda row: max(range(len(row)), key=row.__getitem__)
    disagree = sum(argmax(r1) != argmax(r2) for r1, r2 in zip(first, second))
    with tempfile.TemporaryDirectory() as root:
        smoke = {d: smoke_run(a.kiln, d, root) for d in a.devices}
    print(f"{a.count} MNIST test digits, {a.model}:")
    print(f"  max |probability difference| {a.devices[0]} vs {a.devices[1]}: {max(diffs):.3g}; classes differing: {disagree}")
    for d, (acc, seconds, name) in smoke.items():
        print(f"  configs/smoke.toml on {name}: valid accuracy {acc:.4f}, {seconds:.1f} s")
    gap = abs(smoke[a.devices[0]][0] - smoke[a.devices[1]][0])
    ok = max(diffs) <= a.tolerance and disagree == 0 and gap <= a.accuracy_band
    print("PASS" if ok else f"FAIL (tolerance {a.tolerance}, accuracy band {a.accuracy_band})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
