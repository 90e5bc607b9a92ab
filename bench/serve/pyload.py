#!/usr/bin/env python3
"""A small closed-loop load generator for `kiln serve` (standard library only), for machines
without wrk (such as the lent GPU machine). CONCURRENCY threads each keep one keep-alive
connection busy for SECONDS, POSTing BATCH real MNIST digits per request to /predict.

    python3 bench/serve/pyload.py --url 127.0.0.1:8080 --batch 32 --concurrency 16 --seconds 8

Prints one line: requests/s, images/s, p50 and p99 latency in ms, errors. Python's client
costs CPU too: on a small machine wrk (bench/serve/load.sh) measures the server better.
"""

import argparse
import gzip
import http.client
import json
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="127.0.0.1:8080")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--data", default="datasets/mnist")
    args = ap.parse_args()

    pixels = gzip.open(f"{args.data}/t10k-images-idx3-ubyte.gz").read()[16:]
    images = [list(pixels[i * 784 : (i + 1) * 784]) for i in range(args.batch)]
    body = json.dumps({"instances": images}).encode()
    host, port = args.url.rsplit(":", 1)
    latencies, errors, lock = [], [0], threading.Lock()
    stop = time.monotonic() + args.seconds

    def worker() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine, bad = [], 0
        while time.monotonic() < stop:
            t = time.monotonic()
            try:
                conn.request("POST", "/predict", body, {"content-type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status != 200:
                    bad += 1
                    continue
            except OSError:
                bad += 1
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                continue
            mine.append(time.monotonic() - t)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    n = len(latencies)
    pct = lambda q: latencies[min(n - 1, int(q * n))] * 1e3 if n else float("nan")
    print(f"batch {args.batch} x {args.concurrency} clients: {n / elapsed:.0f} requests/s, "
          f"{n * args.batch / elapsed:.0f} images/s, p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms, "
          f"errors {errors[0]}")


if __name__ == "__main__":
    main()
