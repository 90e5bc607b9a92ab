#!/usr/bin/env python3
"""Writes MNIST test digit INDEX as a 28x28 grey PNG (standard library only), for curl examples.

    python3 scripts/mnist_png.py 0 /tmp/digit.png   # prints its label (the first test digit is a 7)
"""

import gzip
import struct
import sys
import zlib


def main(index: int, out: str, data: str = "datasets/mnist") -> None:
    images = gzip.open(f"{data}/t10k-images-idx3-ubyte.gz").read()[16:]
    labels = gzip.open(f"{data}/t10k-labels-idx1-ubyte.gz").read()[8:]
    pixels = images[index * 784 : (index + 1) * 784]
    raw = b"".join(b"\x00" + pixels[r * 28 : (r + 1) * 28] for r in range(28))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    with open(out, "wb") as f:
        f.write(png)
    print(labels[index])


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
