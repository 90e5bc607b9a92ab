#!/usr/bin/env bash
# Two `kiln` binaries side by side under the same load, case by case, in one run: single-image
# /predict requests at several connection counts, for the MLP and the CNN, default batching
# (max_batch_size 64, max_delay_us 2000), rate limiting off. For before/after comparisons of
# the server itself, e.g. a copy of the old binary against the one just built:
#
#   bench/serve/compare.sh /tmp/kiln-before target/debug/kiln MLP_RUN CNN_RUN
#
# Needs wrk. CONNS (default "1 8 64"), DURATION seconds per case (default 8), MODELS (default
# "mlp cnn"), DEVICE (default auto: cpu, flex with kiln-kernels), ROUNDS (default 1:
# each case runs A then B; 2 runs A B B A), MAX_BATCH (default 64; 1 turns batching off),
# BATCHING_A / BATCHING_B (extra `[batching]` lines for one side only, e.g. 'wait = "queued"').
# Every server is on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 2; }
[ $# -eq 4 ] || { echo "usage: $0 KILN_A KILN_B MLP_RUN CNN_RUN" >&2; exit 2; }
A=$1 B=$2 MLP=$3 CNN=$4
CONNS=${CONNS:-1 8 64}
DURATION=${DURATION:-8}
MODELS=${MODELS:-mlp cnn}
DEVICE=${DEVICE:-auto}
ROUNDS=${ROUNDS:-1}
PORT=${PORT:-18182}

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$work" <<'PY'
import gzip, json, sys
data = gzip.open("datasets/mnist/t10k-images-idx3-ubyte.gz").read()[16:784 + 16]
json.dump({"instances": [list(data)]}, open(f"{sys.argv[1]}/single.json", "w"))
PY
for side in A B; do
  extra=BATCHING_$side
  cat > "$work/serve-$side.toml" <<TOML
addr = "127.0.0.1:$PORT"
[batching]
max_batch_size = ${MAX_BATCH:-64}
max_delay_us = 2000
${!extra:-}
[rate_limit]
enabled = false
TOML
done

serve() { # binary model side
  KILN_LOG=warn "$1" serve --model "$2" --device "$DEVICE" --config "$work/serve-$3.toml" \
    >"$work/serve.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  cat "$work/serve.log" >&2; exit 1
}

case_order() { if [ "$ROUNDS" = 2 ]; then echo "A B B A"; else echo "A B"; fi; }

printf '%-4s %5s %-6s %10s %9s %9s %7s\n' model conns binary "req/s" "p50 ms" "p99 ms" errors
for model in $MODELS; do
  path=$MLP; [ "$model" = cnn ] && path=$CNN
  for conns in $CONNS; do
    for side in $(case_order); do
      bin=$A; [ "$side" = B ] && bin=$B
      serve "$bin" "$path" "$side"
      # A short warm-up, then the measured case.
      BODY="$work/single.json" wrk -t1 -c"$conns" -d1s -s bench/serve/post.lua \
        "http://127.0.0.1:$PORT/predict" >/dev/null
      threads=2; [ "$conns" -lt 2 ] && threads=1
      out=$(BODY="$work/single.json" wrk -t$threads -c"$conns" -d"${DURATION}s" --latency \
        -s bench/serve/post.lua "http://127.0.0.1:$PORT/predict" | grep RESULT)
      eval "$(echo "$out" | sed 's/RESULT //')"
      printf '%-4s %5d %-6s %10.0f %9.2f %9.2f %7d\n' "$model" "$conns" "$side" \
        "$rps" "$p50_ms" "$p99_ms" $((non2xx + socket_errors))
      kill "$server"; wait "$server" 2>/dev/null || true
    done
  done
done
echo "A: $A ${BATCHING_A:-}; B: $B ${BATCHING_B:-}; max_batch_size ${MAX_BATCH:-64}; device $DEVICE; single-image requests, ${DURATION}s per case; wrk and the server share $(nproc) cores"
