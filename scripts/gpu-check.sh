#!/usr/bin/env bash
# GPU check for kiln, meant for a lent GPU machine in one call (no network, no Rust there):
# build here with `cargo build --release --features wgpu,vulkan` (add `cuda` for the CUDA rows; it
# builds offline, and a debug cuda build was linked and probed here), carry target/release/kiln and
# datasets/mnist, then run `bash scripts/gpu-check.sh`. It
#   1. reports the device (nvidia-smi) and sets up carried Vulkan loader libraries, if any;
#   2. trains the MLP and CNN recipes for EPOCHS epochs on each GPU backend the binary has,
#      and on the CPU with the same seed, and compares test accuracy (tolerance TOL);
#   3. runs the same recipes in PyTorch on the same GPU (bench/reference/train_mnist.py);
#   4. serves the CNN it trained on each backend and measures images/s under concurrent load
#      (bench/serve/pyload.py, standard-library Python);
#   5. prints one table and writes it, with every log, under $OUT (default gpu-check-out/).
# On a machine without a GPU it runs what it can (the CPU rows) and says what it skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
KILN=${KILN:-target/release/kiln}
EPOCHS=${EPOCHS:-2}
CPU_LIMIT=${CPU_LIMIT:-0}      # >0: train the CPU rows on only this many images (dry runs)
TOL=${TOL:-0.01}
mkdir -p "$OUT/logs" "$OUT/runs"
table="$OUT/summary.md"
log() { printf '%s\n' "$*" | tee -a "$OUT/logs/check.log" >&2; }

# Vulkan loader libraries carried as Debian packages in gpu-libs/*.deb (see docs/gpu.md).
if compgen -G "gpu-libs/*.deb" > /dev/null; then
  mkdir -p "$OUT/.vk"
  for deb in gpu-libs/*.deb; do dpkg-deb -x "$deb" "$OUT/.vk"; done
  export LD_LIBRARY_PATH="$PWD/$OUT/.vk/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi

card="none"
if command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/logs/nvidia-smi.txt" 2>&1; then
  card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
fi
log "device: $card"
[ -x "$KILN" ] || { log "no kiln binary at $KILN: build it with cargo build --release --features wgpu,vulkan"; exit 1; }
# What kiln itself finds here (Vulkan ICDs, libcuda, NVRTC, headers), before anything runs.
"$KILN" devices | tee "$OUT/logs/devices.txt" >&2 || true

has_backend() { "$KILN" bench --device "$1" --model mlp --seconds 0.1 > "$OUT/logs/probe-$1.txt" 2>&1; }

# train <backend> <config> <label> [extra --set ...]: prints "accuracy samples_per_sec epoch_seconds"
train() {
  local device=$1 config=$2 label=$3; shift 3
  local run
  run=$(timeout 300 "$KILN" train --config "$config" --device "$device" --plain \
        --set "experiment.root=\"$OUT/runs\"" --set "training.epochs=$EPOCHS" "$@" \
        2> "$OUT/logs/train-$label.txt" | tail -n 1)
  if [ -z "$run" ] || [ ! -f "$run/run.json" ]; then echo "failed"; return; fi
  python3 - "$run/run.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))["final_metrics"]
print(f'{m["valid_accuracy"]:.4f} {m["samples_per_sec"]:.0f} {m["epoch_seconds"]:.2f}')
PY
}

echo "| card | backend | model | kiln samples/s | kiln epoch s | PyTorch samples/s | PyTorch epoch s | kiln/PyTorch time | kiln acc | CPU acc | agree |" > "$table"
echo "|---|---|---|---|---|---|---|---|---|---|---|" >> "$table"

cpu_extra=()
[ "$CPU_LIMIT" -gt 0 ] && cpu_extra=(--set "data.limit_train=$CPU_LIMIT")
declare -A cpu_acc
for model in mlp cnn; do
  config=configs/mnist.toml; [ $model = cnn ] && config=configs/mnist-cnn.toml
  read -r acc sps secs <<< "$(train cpu $config cpu-$model "${cpu_extra[@]}")"
  cpu_acc[$model]=$acc
  log "cpu $model: accuracy $acc, $sps samples/s, $secs s/epoch"
  echo "| $card | cpu (flex) | $model | $sps | $secs | | | | $acc | $acc | |" >> "$table"
done

torch_ok=0
python3 -c "import torch" 2> /dev/null && torch_ok=1
for backend in wgpu vulkan cuda; do
  if ! has_backend $backend; then
    log "$backend: skipped ($(tail -n 1 "$OUT/logs/probe-$backend.txt"))"
    continue
  fi
  for model in mlp cnn; do
    config=configs/mnist.toml; [ $model = cnn ] && config=configs/mnist-cnn.toml
    read -r acc sps secs <<< "$(train $backend $config $backend-$model)"
    tsps=""; tsecs=""; ratio=""
    if [ $torch_ok = 1 ]; then
      python3 bench/reference/train_mnist.py --model $model --epochs "$EPOCHS" > "$OUT/logs/torch-$model.json" 2> "$OUT/logs/torch-$model.err"
      read -r tsps tsecs <<< "$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(f"{d[\"samples_per_sec\"]:.0f} {d[\"epoch_seconds\"]:.2f}")' "$OUT/logs/torch-$model.json" 2> /dev/null)"
      [ -n "$tsecs" ] && ratio=$(python3 -c "print(f'{$secs/$tsecs:.2f}')" 2> /dev/null)
    fi
    agree=$(python3 -c "print('yes' if abs(float('$acc') - float('${cpu_acc[$model]}')) <= $TOL else 'no')" 2> /dev/null || echo "?")
    log "$backend $model: accuracy $acc, $sps samples/s, $secs s/epoch; pytorch $tsps samples/s"
    echo "| $card | $backend | $model | $sps | $secs | $tsps | $tsecs | $ratio | $acc | ${cpu_acc[$model]} | $agree |" >> "$table"
  done
done

# Serving: the newest CNN run, on the CPU and on each GPU backend, batch-1 and batch-32 load.
cnn_run=$(ls -d "$OUT"/runs/mnist-cnn/*/ 2> /dev/null | sort | tail -n 1)
serve_rows=""
for backend in cpu ndarray wgpu vulkan cuda; do
  [ -n "$cnn_run" ] || break
  has_backend $backend || continue
  KILN_LOG=warn "$KILN" serve --model "$cnn_run" --device $backend --addr 127.0.0.1:18555 \
    > "$OUT/logs/serve-$backend.txt" 2>&1 &
  pid=$!
  for _ in $(seq 100); do python3 -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:18555/readyz")' 2> /dev/null && break; sleep 0.1; done
  for batch in 1 32; do
    line=$(timeout 60 python3 bench/serve/pyload.py --url 127.0.0.1:18555 --batch $batch --concurrency 32 --seconds 6 2>&1 | tail -n 1)
    log "serve cnn on $backend: $line"
    serve_rows+="| $card | $backend | $line |"$'\n'
  done
  kill -TERM $pid; wait $pid 2> /dev/null
done
if [ -n "$serve_rows" ]; then
  { echo; echo "| card | serve backend (CNN) | load |"; echo "|---|---|---|"; printf '%s' "$serve_rows"; } >> "$table"
fi
[ $torch_ok = 1 ] || log "pytorch: not installed here, reference rows skipped"
log ""
cat "$table"
