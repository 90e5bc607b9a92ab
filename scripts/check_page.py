#!/usr/bin/env python3
"""Checks the page at `GET /` in a real browser (headless Chromium driven by Selenium), offline.

    apt-get install -y chromium chromium-driver
    .ci-venv/bin/pip install selenium
    .ci-venv/bin/python scripts/check_page.py --model RUN_OR_ARTIFACT [--kiln target/debug/kiln]

Starts `kiln serve` on a free port of 127.0.0.1, opens the page and:
  1. waits for the model's name, version and schema (from /readyz and /v2/models/<name>);
  2. picks a text file: the server's 415 must be shown on the page, not swallowed;
  3. picks a PNG of an MNIST test digit, drawn dark on light and 4x larger (so the server
     inverts, crops and scales it): the page must show its class;
  4. draws digits with real pointer strokes (mouse, pen and touch pointers, through
     WebDriver actions): a "1" (a vertical stroke), a "0" (an ellipse) and a "7" (a bar and a
     diagonal). The class shown for each must be the digit drawn, and the bars must have been
     updated while the stroke was still being drawn (more than one /predict per digit);
  5. fails on any error in the browser console (a CSP violation, a script error).
It saves a screenshot (--screenshot) after the last digit and exits non-zero on any failure.
Selenium is pointed at --chromedriver, so it never downloads a driver (SE_OFFLINE is set too).
"""

import argparse
import gzip
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

from kiln_predict import free_port

os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.actions import interaction  # noqa: E402
from selenium.webdriver.common.actions.action_builder import ActionBuilder  # noqa: E402
from selenium.webdriver.common.actions.pointer_input import PointerInput  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Loopback only, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def default_kiln() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")
    return os.path.join(target, "debug", "kiln")


def png(width: int, height: int, pixels: bytes) -> bytes:
    """A grey 8-bit PNG (standard library only)."""
    raw = b"".join(b"\x00" + pixels[r * width : (r + 1) * width] for r in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def paper_digit(index: int, scale: int = 4, margin: int = 20) -> tuple:
    """MNIST test digit `index` as dark ink on white paper, `scale` times larger with a margin,
    as PNG bytes, and its label."""
    data = os.path.join(REPO, "datasets", "mnist")
    images = gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")).read()[16:]
    labels = gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz")).read()[8:]
    digit = images[index * 784 : (index + 1) * 784]
    side = 28 * scale + 2 * margin
    out = bytearray([255]) * (side * side)
    for y in range(28 * scale):
        for x in range(28 * scale):
            out[(y + margin) * side + x + margin] = 255 - digit[(y // scale) * 28 + x // scale]
    return png(side, side, bytes(out)), labels[index]


# Strokes in canvas pixels from the canvas centre (the canvas is 280x280), one list per stroke.
def one() -> list:
    return [[(6 - 10 * t / 24, -95 + 190 * t / 24) for t in range(25)]]


def zero() -> list:
    return [[(58 * math.sin(2 * math.pi * t / 48), -88 * math.cos(2 * math.pi * t / 48))
             for t in range(51)]]


def seven() -> list:
    bar = [(-62 + 124 * t / 12, -85) for t in range(13)]
    leg = [(62 - 72 * t / 20, -85 + 180 * t / 20) for t in range(1, 21)]
    return [bar + leg]


def draw(driver, canvas, strokes: list, kind: str) -> None:
    """Draws `strokes` on `canvas` with a pointer of `kind` (mouse, pen or touch)."""
    pointer = PointerInput(kind, kind)
    actions = ActionBuilder(driver, mouse=pointer, duration=15)
    for stroke in strokes:
        x, y = stroke[0]
        actions.pointer_action.move_to(canvas, int(x), int(y))
        actions.pointer_action.pointer_down()
        for x, y in stroke[1:]:
            actions.pointer_action.move_to(canvas, int(x), int(y))
        actions.pointer_action.pointer_up()
    actions.perform()


def wait_settled(driver, timeout: float) -> None:
    """Waits until the prediction on screen is for the drawing as it is now."""
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script(
            "const b = document.body.dataset; return b.shown !== undefined && b.shown === b.drawn;"
        )
    )


def shown(driver) -> dict:
    return driver.execute_script(
        """
        const p = document.getElementById('predicted');
        const bars = [...document.querySelectorAll('#bars li')].map((li) => ({
          cls: li.dataset.class,
          text: li.querySelector('.value').textContent,
          width: li.querySelector('.fill').style.width,
        }));
        const error = document.getElementById('error');
        return {cls: p.dataset.class, label: p.textContent, bars,
                confidence: document.getElementById('confidence').textContent,
                error: error.hidden ? null : error.textContent,
                fitted: !document.getElementById('fitted-figure').hidden};
        """
    )


def predict_requests(driver) -> int:
    return driver.execute_script(
        "return performance.getEntriesByType('resource')"
        ".filter((e) => e.name.includes('/predict')).length;"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kiln", default=default_kiln(), help="the kiln binary (default: %(default)s)")
    parser.add_argument("--model", required=True, help="run or artifact directory to serve")
    parser.add_argument("--screenshot", default="/tmp/kiln-page.png", help="PNG written after the last digit")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for each step")
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([args.kiln, "serve", "--model", args.model, "--addr", f"127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    profile = tempfile.TemporaryDirectory(prefix="kiln-page-chromium-")
    driver = None
    failures = []
    try:
        deadline = time.monotonic() + args.timeout
        while True:
            try:
                with DIRECT.open(f"{base}/readyz", timeout=2) as r:
                    ready = json.load(r)
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    sys.stderr.write(log.read().decode(errors="replace"))
                    raise SystemExit(f"kiln serve did not become ready on {base}")
                time.sleep(0.1)
        print(f"serving {ready['model']} {ready['version']} from {args.model} on {base}")

        options = webdriver.ChromeOptions()
        options.binary_location = args.chromium
        for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-proxy-server", "--window-size=1000,1000", f"--user-data-dir={profile.name}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=args.chromedriver))
        wait = WebDriverWait(driver, args.timeout)

        driver.get(f"{base}/")
        wait.until(lambda d: ready["model"] in d.find_element(By.ID, "model").text)
        wait.until(lambda d: ready["model"] in d.find_element(By.ID, "schema").text)
        header = driver.find_element(By.ID, "model").text
        schema = driver.find_element(By.ID, "schema").text.replace("\n", " | ")
        print(f"page: {header!r}; schema: {schema}")
        if ready["version"] not in header:
            failures.append(f"the page does not show the version {ready['version']}: {header!r}")

        picker = driver.find_element(By.ID, "file")
        with tempfile.TemporaryDirectory() as files:
            text = os.path.join(files, "notes.txt")
            with open(text, "w") as f:
                f.write("not an image\n")
            picker.send_keys(text)
            try:
                wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
                print(f"a text file: the page shows {driver.find_element(By.ID, 'error').text!r}")
            except TimeoutException:
                failures.append("a text file: no error shown")

            photo, label = paper_digit(0)
            path = os.path.join(files, "paper-digit.png")
            with open(path, "wb") as f:
                f.write(photo)
            picker.send_keys(path)
            try:
                wait.until(lambda d: d.execute_script("return document.body.dataset.shown") == "file"
                           and not d.find_element(By.ID, "error").is_displayed())
                got = shown(driver)
                print(f"a 152x152 PNG of test digit 0 (a {label}, dark on light): class {got['cls']} "
                      f"({got['confidence']})")
                if got["cls"] != str(label):
                    failures.append(f"the picked image is a {label}; the page shows {got['cls']}")
            except TimeoutException:
                failures.append(f"the picked image: no prediction shown ({shown(driver)})")

        canvas = driver.find_element(By.ID, "pad")
        for digit, strokes, kind in [(1, one(), interaction.POINTER_MOUSE),
                                     (0, zero(), interaction.POINTER_PEN),
                                     (7, seven(), interaction.POINTER_TOUCH)]:
            driver.find_element(By.ID, "clear").click()
            before = predict_requests(driver)
            draw(driver, canvas, strokes, kind)
            try:
                wait_settled(driver, args.timeout)
            except TimeoutException:
                failures.append(f"drew a {digit} ({kind}): the page never showed a prediction; {shown(driver)}")
                continue
            got = shown(driver)
            requests = predict_requests(driver) - before
            bars = ", ".join(f"{b['cls']} {b['text']}" for b in got["bars"])
            print(f"drew a {digit} with a {kind} pointer: class {got['cls']} (label {got['label']!r}, "
                  f"{got['confidence']}); bars: {bars}; {requests} /predict requests while drawing")
            if got["error"]:
                failures.append(f"drew a {digit}: error shown: {got['error']}")
            if got["cls"] != str(digit):
                failures.append(f"drew a {digit}: the page shows class {got['cls']}")
            if requests < 2:
                failures.append(f"drew a {digit}: {requests} request(s); expected updates while drawing")
            if not got["bars"] or got["bars"][0]["cls"] != got["cls"]:
                failures.append(f"drew a {digit}: the bars do not lead with the class shown: {got['bars']}")
            if not got["fitted"]:
                failures.append(f"drew a {digit}: the fitted 28x28 input is not shown")

        driver.save_screenshot(args.screenshot)
        print(f"screenshot: {args.screenshot}")
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
                  and "notes.txt" not in e.get("message", "") and "415" not in e.get("message", "")]
        for e in errors:
            failures.append(f"browser console: {e['message']}")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        profile.cleanup()

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    if failures:
        return 1
    print("page check passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
