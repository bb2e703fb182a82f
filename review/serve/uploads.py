"""What a ``POST /score`` carries: multipart uploads (field ``files``) or ``{"paths": [...]}``, read within bounds.

Request bodies are untrusted: the body is read as a stream and refused (413) as soon as it passes
``max_bytes`` or carries more than ``max_images`` images; the multipart parser (python-multipart,
streaming) keeps the parts in memory only, so nothing of an upload is ever written to disk. Paths
are taken only when the server was started with ``--allow-paths DIR``, and only those that resolve
(symlinks followed) inside ``DIR``; each is read with the same bounded reader as ``extract``.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from stylesift.review.serve.errors import ServeError

FIELD = "files"
MAX_JSON_BYTES = 1 << 20  # a list of paths
MAX_OTHER_PARTS = 16  # form fields other than `files`, ignored, but not without end
MAX_NAME_CHARS = 255


@dataclass
class Upload:
    """One image of a request: the name it is answered under, and its bytes or why it has none.

    ``path`` is the file read for a ``paths`` request (its store path); ``None`` for an upload.
    """

    filename: str
    data: bytes | None = None
    error: str | None = None
    path: str | None = None

    @property
    def store_path(self) -> str:
        """Where the store says the image was seen: its file, or ``upload:NAME`` for an upload."""
        return self.path if self.path is not None else "upload:" + shown_name(self.filename.replace("\\", "/").rsplit("/", 1)[-1])


def shown_name(raw: str) -> str:
    """A client-given name made safe to print and store: control characters dropped, at most 255 characters."""
    return "".join(c for c in raw if c.isprintable())[:MAX_NAME_CHARS]


def too_large(what: str, limit: int, option: str) -> ServeError:
    return ServeError(f"{what} is over the server's limit of {limit:,}; send fewer or smaller images per request "
                      f"(or start the server with a larger {option})", 413)


async def read_multipart(stream: AsyncIterator[bytes], content_type: str, *, max_bytes: int, max_images: int) -> list[Upload]:
    """The ``files`` parts of a ``multipart/form-data`` body, in order; :class:`ServeError` 400 or 413."""
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ServeError("the multipart body has no boundary in its Content-Type; send it as multipart/form-data", 400)
    uploads: list[Upload] = []
    state = {"field": b"", "value": b"", "headers": {}, "chunks": None, "others": 0}

    def on_part_begin():
        state["headers"] = {}

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        if disposition.get(b"name", b"").decode("utf-8", "replace") != FIELD:
            state["others"] += 1
            if state["others"] > MAX_OTHER_PARTS:
                raise ServeError(f"the body has more than {MAX_OTHER_PARTS} form fields besides `{FIELD}`; send images "
                                 f"in the field `{FIELD}` only", 413)
            state["chunks"] = None
            return
        if len(uploads) >= max_images:
            raise too_large(f"a request of more than {max_images} images", max_images, "--max-images")
        name = disposition.get(b"filename", b"").decode("utf-8", "replace")
        uploads.append(Upload(shown_name(name) or f"{FIELD}[{len(uploads)}]"))
        state["chunks"] = []

    def on_part_data(data, start, end):
        if state["chunks"] is not None:
            state["chunks"].append(bytes(data[start:end]))

    def on_part_end():
        if state["chunks"] is not None:
            uploads[-1].data = b"".join(state["chunks"])
            if not uploads[-1].data:
                uploads[-1].data, uploads[-1].error = None, f"{uploads[-1].filename}: empty file (0 bytes)"
        state["chunks"] = None

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
                                        "on_part_end": on_part_end})
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise too_large(f"a request body of more than {max_bytes:,} bytes", max_bytes, "--max-request-size")
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise ServeError(f"the body is not valid multipart/form-data ({exc}); send the images as multipart files in "
                         f"the field `{FIELD}`", 400) from None
    if not uploads:
        raise ServeError(f"no images in the body: send them as multipart files in the field `{FIELD}` "
                         f"(curl: -F {FIELD}=@photo.jpg)", 400)
    if any(u.data is None and u.error is None for u in uploads):  # the body ended inside a part
        raise ServeError("the multipart body ends in the middle of a file; send it again", 400)
    return uploads


async def read_body(stream: AsyncIterator[bytes], max_bytes: int) -> bytes:
    """The whole body, refused (413) past ``max_bytes``."""
    chunks, received = [], 0
    async for chunk in stream:
        received += len(chunk)
        if received > max_bytes:
            raise too_large(f"a JSON body of more than {max_bytes:,} bytes", max_bytes, "--max-request-size")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_paths(raw: bytes, allow: Path | None, *, max_images: int) -> list[Upload]:
    """The uploads named by a ``{"paths": [...]}`` body (not yet read: see :func:`read_path`)."""
    if allow is None:
        raise ServeError("this server takes no paths: upload the images as multipart files in the field "
                         f"`{FIELD}`, or start it with --allow-paths DIR to score files inside DIR", 403)
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ServeError('the body must be JSON: {"paths": ["photo.jpg", ...]}', 400) from None
    paths = body.get("paths") if isinstance(body, dict) else None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise ServeError('the body must be {"paths": [...]}: a non-empty list of file paths (strings)', 400)
    if len(paths) > max_images:
        raise too_large(f"a request of {len(paths)} images", max_images, "--max-images")
    return [Upload(shown_name(p), path=p) for p in paths]


def read_path(upload: Upload, allow: Path, max_bytes: int) -> Upload:
    """Read the file a ``paths`` request names, if it resolves inside ``allow``; failures are the upload's error."""
    from stylesift.featurizer.images import ImageError, read_image_bytes

    raw = upload.path
    folder = Path(os.path.realpath(allow))
    real = Path(os.path.realpath(folder / raw))  # an absolute path stays itself; a relative one is inside DIR
    if not real.is_relative_to(folder):
        upload.error = f"{raw}: outside the folder this server may read ({folder}, --allow-paths)"
        return upload
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(raw, "is a directory, not an image file" if stat.S_ISDIR(st.st_mode) else "not a regular file")
        if st.st_size > max_bytes:
            raise ImageError(raw, f"file of {st.st_size:,} bytes is larger than the server's limit of {max_bytes:,} "
                             "bytes per request (--max-request-size)")
        upload.data = read_image_bytes(real, st)
        upload.path = str(real)
    except ImageError as exc:
        upload.error = f"{raw}: {exc.reason}"
    except FileNotFoundError:
        upload.error = f"{raw}: no such file"
    except OSError as exc:
        upload.error = f"{raw}: cannot read ({exc.strerror or exc})"
    return upload
