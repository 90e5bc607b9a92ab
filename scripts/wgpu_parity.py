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
import subprocess
import sys
import tempfile
import time

from kiln_predict import served_probabilities

BATCH = 64


def test_images(count: int) -> list:
    data = gzip.open("datasets/mnist/t10k-images-idx3-ubyte.gz").read()[16:]
    return [list(data[i * 784 : (i + 1) * 784]) for i in range(count)]


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
    first, second = (served_probabilities(a.kiln, a.model, d, images, BATCH)[0] for d in a.devices)
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
