"""Reads burnpack (.bpk) files, burn's record format, with the standard library only.

Used by kill_soak.py to compare checkpoints by tensor *values* as well as by bytes: a burnpack
file is a 10-byte header (magic "BURN" as u32 LE, version u16, metadata size u32), a CBOR
metadata blob (`tensors`: name -> {dtype, shape, data_offsets, param_id}) and a 256-byte
aligned data section. Two records with the same tensors but different (random) parameter ids
differ in their bytes but not in `tensor_digest`.

    python3 scripts/burnpack.py FILE.bpk      # lists the tensors and both digests
"""

from __future__ import annotations

import hashlib
import struct
import sys

MAGIC = 0x4255524E
HEADER = 10
ALIGN = 256


def _cbor(buf: bytes, pos: int):
    """Decodes one CBOR item at `pos`; returns (value, next position)."""
    ib = buf[pos]
    pos += 1
    major, ai = ib >> 5, ib & 31
    if major == 7:
        if ai == 20:
            return False, pos
        if ai == 21:
            return True, pos
        if ai in (22, 23):
            return None, pos
        if ai == 25:
            return struct.unpack(">e", buf[pos:pos + 2])[0], pos + 2
        if ai == 26:
            return struct.unpack(">f", buf[pos:pos + 4])[0], pos + 4
        if ai == 27:
            return struct.unpack(">d", buf[pos:pos + 8])[0], pos + 8
        if ai == 31:
            return _BREAK, pos
        if ai < 24:
            return ai, pos
        return buf[pos], pos + 1
    if ai < 24:
        n = ai
    elif ai in (24, 25, 26, 27):
        size = 1 << (ai - 24)
        n = int.from_bytes(buf[pos:pos + size], "big")
        pos += size
    elif ai == 31:
        n = None  # indefinite length
    else:
        raise ValueError(f"bad CBOR additional info {ai} at {pos - 1}")
    if major == 0:
        return n, pos
    if major == 1:
        return -1 - n, pos
    if major in (2, 3):
        if n is None:
            parts = []
            while buf[pos] != 0xFF:
                part, pos = _cbor(buf, pos)
                parts.append(part)
            joined = b"".join(parts) if major == 2 else "".join(parts)
            return joined, pos + 1
        raw = bytes(buf[pos:pos + n])
        return (raw if major == 2 else raw.decode("utf-8")), pos + n
    if major == 4:
        items = []
        while n is None or len(items) < n:
            item, pos = _cbor(buf, pos)
            if item is _BREAK:
                break
            items.append(item)
        return items, pos
    if major == 5:
        out = {}
        count = 0
        while n is None or count < n:
            key, pos = _cbor(buf, pos)
            if key is _BREAK:
                break
            value, pos = _cbor(buf, pos)
            out[_hashable(key)] = value
            count += 1
        return out, pos
    if major == 6:
        return _cbor(buf, pos)  # tags: keep the tagged value
    raise ValueError(f"bad CBOR major type {major}")


_BREAK = object()


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def read(data: bytes) -> dict:
    """Parses a burnpack file: {'version', 'metadata', 'tensors': {name: {dtype, shape,
    param_id, data}}}. Raises ValueError on anything malformed."""
    if len(data) < HEADER:
        raise ValueError("shorter than a burnpack header")
    magic, version, meta_size = struct.unpack("<IHI", data[:HEADER])
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic:#x}")
    meta, end = _cbor(data, HEADER)
    if end != HEADER + meta_size:
        raise ValueError(f"metadata ends at {end}, header says {HEADER + meta_size}")
    start = -(-(HEADER + meta_size) // ALIGN) * ALIGN
    tensors = {}
    for name, desc in (meta.get("tensors") or {}).items():
        s, e = desc["data_offsets"]
        if not 0 <= s <= e <= len(data) - start:
            raise ValueError(f"tensor {name}: data {s}..{e} outside the file")
        tensors[name] = {
            "dtype": desc.get("dtype"),
            "shape": list(desc.get("shape") or []),
            "param_id": desc.get("param_id"),
            "data": bytes(data[start + s:start + e]),
        }
    return {"version": version, "metadata": meta.get("metadata") or {}, "tensors": tensors,
            "raw_meta": meta}


def tensor_digest(data: bytes, rename: dict | None = None) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and values, in name order, leaving out
    parameter ids. `rename` maps names (e.g. ones that embed a parameter id) to stable ones."""
    pack = read(data)
    h = hashlib.sha256()
    items = []
    for name, t in pack["tensors"].items():
        items.append(((rename or {}).get(name, name), t))
    for name, t in sorted(items, key=lambda x: x[0]):
        h.update(f"{name}|{t['dtype']}|{t['shape']}|{len(t['data'])}\n".encode())
        h.update(t["data"])
    return h.hexdigest()


def param_names(model_bytes: bytes) -> dict:
    """param_id (as text) -> tensor name, from a model record."""
    out = {}
    for name, t in read(model_bytes)["tensors"].items():
        if t["param_id"] is not None:
            out[str(t["param_id"])] = name
    return out


def optim_rename(optim_bytes: bytes, model_bytes: bytes) -> dict:
    """Names of an optimizer record with any parameter id in them replaced by the model
    tensor's name, so two optimizer records can be compared across runs."""
    ids = param_names(model_bytes)
    rename = {}
    for name in read(optim_bytes)["tensors"]:
        new = name
        for pid, pname in ids.items():
            if pid in new:
                new = new.replace(pid, f"<{pname}>")
        rename[name] = new
    return rename


if __name__ == "__main__":
    raw = open(sys.argv[1], "rb").read()
    p = read(raw)
    print(f"version {p['version']}, metadata {p['metadata']}")
    for n, t in p["tensors"].items():
        print(f"  {n}: {t['dtype']} {t['shape']} param_id={t['param_id']} {len(t['data'])} bytes")
    print("sha256 of bytes  ", hashlib.sha256(raw).hexdigest())
    print("tensor digest    ", tensor_digest(raw))
