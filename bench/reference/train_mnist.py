#!/usr/bin/env python3
"""PyTorch reference for kiln's recipes, for side-by-side numbers on the same machine.

Same data (datasets/mnist, read from the IDX files with numpy), same networks (the 784-128-10
MLP and the conv32-conv64-pool-fc128 CNN with dropout 0.25/0.5), same optimiser (Adam 1e-3,
eps 1e-8), same batch size (64) and normalisation as configs/mnist.toml and
configs/mnist-cnn.toml. The whole dataset is moved to the device once, so the loop makes no
per-step host round trips.

    python3 bench/reference/train_mnist.py --model cnn --epochs 3 --device cuda

Prints one JSON line: model, device, epochs, samples/s, seconds per epoch, test accuracy.

    python3 bench/reference/train_mnist.py --model cnn --bench 10 --threads 2

measures instead what `kiln bench` measures, the same way: training samples/s over `--bench`
seconds after five warm-up steps, then inference latency at batch 1 (mean of 200) and
throughput at batch 256 (over 3 s), in eval mode without gradients.
"""

import argparse
import gzip
import json
import time

import numpy as np
import torch
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, mean, std, device):
    def split(prefix):
        x = read_idx(f"{data_dir}/{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
        y = read_idx(f"{data_dir}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        x = (x - mean) / std
        return torch.from_numpy(x).unsqueeze(1).to(device), torch.from_numpy(y).to(device)

    return split("train"), split("t10k")


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10),
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", default="datasets/mnist")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bench", type=float, default=0.0, help="seconds: measure like `kiln bench`")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    mean, std = (0.5, 0.5) if a.model == "mlp" else (0.1307, 0.3081)
    (x, y), (xt, yt) = load(a.data, mean, std, device)
    model = (mlp() if a.model == "mlp" else cnn()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    if a.bench:
        return bench(a, model, opt, loss_fn, x, y)
    epoch_seconds = []
    for _ in range(a.epochs):
        model.train()
        perm = torch.randperm(n, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, n, a.batch_size):
            idx = perm[i : i + a.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        correct = sum((model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum().item() for i in range(0, xt.shape[0], 1000))
    best = min(epoch_seconds)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "model": a.model, "device": str(device),
        "epochs": a.epochs, "samples_per_sec": n / best, "epoch_seconds": best,
        "test_accuracy": correct / xt.shape[0],
    }))


def bench(a, model, opt, loss_fn, x, y):
    def step(idx):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        return loss

    model.train()
    perm = torch.randperm(x.shape[0])
    batches = [perm[i : i + a.batch_size] for i in range(0, x.shape[0] - a.batch_size + 1, a.batch_size)]
    for idx in batches[:5]:
        step(idx)
    items, i, start = 0, 5, time.perf_counter()
    while time.perf_counter() - start < a.bench:
        loss = step(batches[i % len(batches)])
        items += a.batch_size
        i += 1
    loss.item()
    train_rate = items / (time.perf_counter() - start)

    model.eval()
    with torch.no_grad():
        one, big = x[:1], x[:256]
        for _ in range(20):
            model(one)
        start = time.perf_counter()
        for _ in range(200):
            model(one)
        latency_ms = (time.perf_counter() - start) * 1e3 / 200
        model(big)
        items, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3.0:
            model(big)
            items += big.shape[0]
        infer_rate = items / (time.perf_counter() - start)
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "model": a.model, "device": str(a.device),
        "threads": torch.get_num_threads(), "batch_size": a.batch_size,
        "train_samples_per_sec": train_rate, "infer_batch1_ms": latency_ms,
        "infer_batch256_samples_per_sec": infer_rate,
    }))


if __name__ == "__main__":
    main()
