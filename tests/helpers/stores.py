"""Damage done to real stores on disk, for the tests of what a damaged store reports."""

from __future__ import annotations

import h5py


def damage_features(path, row: int) -> str:
    """Flip one exponent bit of a stored feature value on disk; return the segment file."""
    with h5py.File(path, "r") as f:
        seg = path.parent / f["features"].virtual_sources()[0].file_name
    with h5py.File(seg, "r") as f:
        ds = f["sets/pooled"]
        offset = ds.id.get_chunk_info_by_coord((row // ds.chunks[0] * ds.chunks[0], 0)).byte_offset
    raw = bytearray(seg.read_bytes())
    raw[offset + 4 * 2048 * (row % ds.chunks[0]) + 3] ^= 0x40
    seg.write_bytes(bytes(raw))
    return str(seg)
