#!/usr/bin/env bash
# kiln against PyTorch on this machine's CPU, side by side in one run: the same nets (MLP, CNN),
# batch 64, Adam, 2 threads, training samples/s, inference latency at batch 1 and throughput at
# batch 256. kiln is measured twice, on its own convolution kernels and with `KILN_KERNELS=burn`
# (burn's flex convolution and pooling, what kiln ran before), so one table holds
# before, after and the reference.
#
#   PYTHON=/path/to/venv/bin/python bench/cpu/compare.sh [KILN] [SECONDS]
#
# KILN defaults to target/debug/kiln (what `cargo test` builds; dependencies at opt-level 3),
# SECONDS (default 10) is each training measurement; ROUNDS (default 3) repeats the three sides
# in turn and the table shows each figure's median (these machines are shared and noisy).
# BEFORE=/path/to/an/older/kiln adds that build as one more side, measured in the same rounds
# (before and after in one run). PYTHON must import torch and numpy: PyPI's
# `torch` is the CUDA build (several GB of nvidia-* wheels) but runs on the CPU; keep it out of
# CI. Prints the CPU model first: figures from different machines do not compare.
set -euo pipefail
cd "$(dirname "$0")/../.."
KILN=${1:-target/debug/kiln}
SECONDS_EACH=${2:-10}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
"$PYTHON" -c "import torch, numpy" 2>/dev/null || {
  echo "$PYTHON cannot import torch and numpy: python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch numpy, then PYTHON=/tmp/torch/bin/python" >&2
  exit 2
}
[ -x "$KILN" ] || { echo "$KILN not found: cargo build (or cargo test --no-run) first" >&2; exit 2; }
BEFORE=${BEFORE:-}
[ -z "$BEFORE" ] || [ -x "$BEFORE" ] || { echo "BEFORE=$BEFORE is not an executable kiln" >&2; exit 2; }

avx512=$(grep -q avx512f /proc/cpuinfo && echo "AVX-512" || echo "no AVX-512")
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p'), family $(lscpu | sed -n 's/^CPU family: *//p') model $(lscpu | sed -n 's/^Model: *//p'), $avx512 ($(nproc) cores); $THREADS threads; batch 64; Adam"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for round in $(seq "$ROUNDS"); do
  for model in mlp cnn; do
    RAYON_NUM_THREADS=$THREADS "$KILN" bench --model "$model" --seconds "$SECONDS_EACH" > "$out/kiln-$model-$round"
    KILN_KERNELS=burn RAYON_NUM_THREADS=$THREADS "$KILN" bench --model "$model" --seconds "$SECONDS_EACH" > "$out/burn-$model-$round"
    if [ -n "$BEFORE" ]; then
      RAYON_NUM_THREADS=$THREADS "$BEFORE" bench --model "$model" --seconds "$SECONDS_EACH" > "$out/before-$model-$round"
    fi
    "$PYTHON" bench/reference/train_mnist.py --model "$model" --bench "$SECONDS_EACH" \
      --threads "$THREADS" --device cpu > "$out/torch-$model-$round"
  done
done
python3 - "$out" "$ROUNDS" "$BEFORE" <<'PY'
import json, re, statistics, sys
out, rounds, has_before = sys.argv[1], int(sys.argv[2]), bool(sys.argv[3])

def kiln(path):
    text = open(path).read()
    grab = lambda pat: float(re.search(pat + r"\s+([\d.]+)", text).group(1))
    return {
        "train": grab(r"train \w+ \(Adam\):"),
        "b1": grab(r"infer \w+ batch 1:"),
        "b256": grab(r"infer \w+ batch 256:"),
    }

def torch_run(path):
    t = json.load(open(path))
    return t["framework"], {"train": t["train_samples_per_sec"], "b1": t["infer_batch1_ms"],
                            "b256": t["infer_batch256_samples_per_sec"]}

def median(runs):
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}

rows = []
for model in ["mlp", "cnn"]:
    each = range(1, rounds + 1)
    after = median([kiln(f"{out}/kiln-{model}-{r}") for r in each])
    burn = median([kiln(f"{out}/burn-{model}-{r}") for r in each])
    older = median([kiln(f"{out}/before-{model}-{r}") for r in each]) if has_before else None
    framework = torch_run(f"{out}/torch-{model}-1")[0]
    torch = median([torch_run(f"{out}/torch-{model}-{r}")[1] for r in each])
    for key, label, unit, higher in [("train", "train", "samples/s", True),
                                     ("b1", "infer batch 1", "ms", False),
                                     ("b256", "infer batch 256", "samples/s", True)]:
        ratio = after[key] / torch[key] if higher else torch[key] / after[key]
        earlier = [older[key]] if older else []
        rows.append([f"{model.upper()} {label}, {unit}", burn[key], *earlier, after[key], torch[key], ratio])
before_head = " kiln before (BEFORE) |" if has_before else ""
print(f"| work | kiln, burn's ops (KILN_KERNELS=burn) |{before_head} kiln | PyTorch {framework.split()[1]} | kiln vs PyTorch |")
print("|---|---|---|---|---|" + ("---|" if has_before else ""))
fmt = lambda v: f"{v:,.4f}" if v < 1 else f"{v:,.0f}"
for name, *figures, r in rows:
    print(f"| {name} | " + " | ".join(fmt(v) for v in figures) + f" | {r:.2f}x |")
print(f"(medians of {rounds} rounds; kiln vs PyTorch: > 1 means kiln is faster, for latency too)")
PY
