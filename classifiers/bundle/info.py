"""What ``stylesift model info`` shows of a bundle, building nothing."""

from __future__ import annotations

from pathlib import Path

from stylesift.classifiers.bundle.audit import schema_types, untrusted_types
from stylesift.classifiers.bundle.header import (
    FORMAT_VERSION,
    LEGACY_MAGIC,
    UPGRADE_COMMAND,
    BundleError,
    magic_of,
    read_file,
    read_header,
)
from stylesift.classifiers.bundle.v1 import legacy_header


def inspect(path) -> dict:
    """What ``stylesift model info`` shows: the header, the file's size, whether its checksum holds
    and which types the payload would build (read from its schema; nothing is built).

    A format-1 bundle gives its header with ``"format_version": 1`` and ``"needs_upgrade"``;
    nothing of its pickle is read.
    """
    path = Path(path)
    if magic_of(path) == LEGACY_MAGIC:
        return {"file": str(path), "bytes": path.stat().st_size, "format_version": 1,
                "needs_upgrade": UPGRADE_COMMAND, "header": legacy_header(path)}
    header = read_header(path)
    try:
        payload = read_file(path)[1]
    except BundleError:
        return {"file": str(path), "bytes": path.stat().st_size, "format_version": FORMAT_VERSION,
                "checksum_ok": False, "types": [], "refused_types": [], "header": header}
    return {"file": str(path), "bytes": path.stat().st_size, "format_version": FORMAT_VERSION, "checksum_ok": True,
            "types": sorted(schema_types(payload, path)[0]), "refused_types": untrusted_types(payload, path),
            "header": header}
