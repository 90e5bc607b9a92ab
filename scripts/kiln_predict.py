"""`kiln serve` for the check scripts: start it on a free loopback port, wait until ready, post
images to /predict in batches, stop it. Standard library only (check_onnx.py, wgpu_parity.py,
check_page.py import it; they run from scripts/, which Python puts on the import path)."""

import json
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise SystemExit(f"POST {url}: {e.code} {e.read().decode(errors='replace')}")


def served_probabilities(kiln: str, model: str, device: str, images: list, batch: int) -> tuple:
    """Probabilities from `kiln serve --device DEVICE`'s POST /predict for `images` (lists of
    784 raw 0-255 pixels), `batch` at a time, and the model version the server names."""
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
                raise SystemExit(f"kiln serve --device {device} was not ready within 120 s")
            time.sleep(0.1)
        result, version = [], None
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            answer = post(f"{base}/predict", {"instances": chunk, "scale": "u8", "invert": "no"})
            version = answer["model"]["version"]
            predictions = answer["predictions"]
            if len(predictions) != len(chunk):
                raise SystemExit(f"/predict answered {len(predictions)} predictions for {len(chunk)}")
            result.extend(p["probabilities"] for p in predictions)
        return result, version
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
