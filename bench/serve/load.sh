#!/usr/bin/env bash
# Load benchmark for `kiln serve` on loopback with wrk: requests/s, images/s and p50/p99 latency
# for the MLP and the CNN, single images and batches, with dynamic batching on and off.
#
#   bench/serve/load.sh [MLP_RUN_OR_ARTIFACT] [CNN_RUN_OR_ARTIFACT]
#
# Defaults to the newest runs under experiments/mnist-mlp and experiments/mnist-cnn. Needs wrk
# (apt-get install wrk) and a built kiln (KILN=path, default target/release/kiln or
# target/debug/kiln). Bounded: DURATION seconds per case (default 8), CONNECTIONS (default 64).
# DEVICE (default auto: cpu, flex with kiln-kernels), MODELS (default "mlp cnn"),
# WORKERS (inference threads, default 1).
# Rate limiting is off for the benchmark; everything else is the default config.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
KILN=${KILN:-$( [ -x target/release/kiln ] && echo target/release/kiln || echo target/debug/kiln )}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-64}
PORT=${PORT:-18181}
DEVICE=${DEVICE:-auto}
MODELS=${MODELS:-mlp cnn}
WORKERS=${WORKERS:-1}
newest() { ls -d "experiments/$1"/*/ 2>/dev/null | sort | tail -n 1; }
MLP=${1:-$(newest mnist-mlp)}
CNN=${2:-$(newest mnist-cnn)}
[ -n "$MLP" ] && [ -n "$CNN" ] || { echo "train first: kiln train --config configs/mnist.toml and configs/mnist-cnn.toml" >&2; exit 2; }

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import gzip, json, sys
work = sys.argv[1]
data = gzip.open("datasets/mnist/t10k-images-idx3-ubyte.gz").read()[16:]
imgs = [list(data[i * 784:(i + 1) * 784]) for i in range(64)]
json.dump({"instances": imgs[:1]}, open(f"{work}/single.json", "w"))
json.dump({"instances": imgs[:32]}, open(f"{work}/batch32.json", "w"))
PY

serve() { # model max_batch
  cat > "$work/serve.toml" <<TOML
addr = "127.0.0.1:$PORT"
[batching]
max_batch_size = $2
max_delay_us = 2000
workers = $WORKERS
[rate_limit]
enabled = false
TOML
  KILN_LOG=warn "$KILN" serve --model "$1" --device "$DEVICE" --config "$work/serve.toml" >"$work/serve.log" 2>&1 &
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  cat "$work/serve.log" >&2; exit 1
}

printf '%-4s %-9s %-8s %10s %10s %9s %9s %7s\n' model batching request "req/s" "images/s" "p50 ms" "p99 ms" errors
for model in $MODELS; do
  path=$MLP; [ $model = cnn ] && path=$CNN
  for batching in on off; do
    max=64; [ $batching = off ] && max=1
    serve "$path" $max
    for request in single batch32; do
      images=1; [ $request = batch32 ] && images=32
      out=$(BODY="$work/$request.json" wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
        -s bench/serve/post.lua "http://127.0.0.1:$PORT/predict" | grep RESULT)
      eval "$(echo "$out" | sed 's/RESULT //')"
      printf '%-4s %-9s %-8s %10.0f %10.0f %9.2f %9.2f %7d\n' $model $batching $request \
        "$rps" "$(echo "$rps * $images" | bc)" "$p50_ms" "$p99_ms" $((non2xx + socket_errors))
    done
    kill %1; wait %1 2>/dev/null || true
  done
done
echo "kiln: $KILN on $DEVICE, $WORKERS worker(s); $CONNECTIONS connections, ${DURATION}s per case, wrk and the server share $(nproc) cores"
