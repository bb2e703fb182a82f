"""Bearer tokens: read from a file or made up, compared in constant time, required by an ASGI middleware.

Every request but ``GET /health`` must carry ``Authorization: Bearer TOKEN``. The token is never
logged by stylesift; uvicorn's access log (off by default) prints request lines, not headers.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path

from stylesift.review.serve.errors import ServeError

# URL-safe characters only (letters, digits, ``-`` and ``_``): safe in a header, a shell and a URL.
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/health"})


def generate_token() -> str:
    """A fresh random token (``secrets.token_urlsafe``, 43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def read_token(path) -> str:
    """The token on the first line of ``path`` (surrounding spaces removed); :class:`ServeError` naming the fix.

    A file lets the token survive restarts, so the app's configuration need not change.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as fh:
            first = fh.readline(4096).strip()
    except FileNotFoundError:
        raise ServeError(f"{path}: no such token file; write a token into it (e.g. `python -c \"import secrets; "
                         f"print(secrets.token_urlsafe(32))\" > {path}`) or leave --token-file out to get one") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"{path}: cannot read the token file ({getattr(exc, 'strerror', None) or exc}); "
                         "check its permissions and that it is text") from None
    if len(first) < MIN_TOKEN_CHARS or any(c.isspace() for c in first) or not first.isprintable():
        raise ServeError(f"{path}: the first line must be a token of at least {MIN_TOKEN_CHARS} printable characters "
                         "without spaces; write a longer one (e.g. from secrets.token_urlsafe(32))")
    return first


def token_matches(expected: str, header: str | None) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer <expected>`` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected.encode())


class BearerAuth:
    """ASGI middleware: answers 401 to any HTTP request without the token, except ``open_paths``.

    Pure ASGI (not Starlette's ``BaseHTTPMiddleware``), so request bodies stream through untouched
    and nothing is read before the token is checked.
    """

    def __init__(self, app, token: str, open_paths=OPEN_PATHS):
        self.app = app
        self.token = token
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in self.open_paths:
            return await self.app(scope, receive, send)
        header = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"), None)
        if token_matches(self.token, header):
            return await self.app(scope, receive, send)
        body = json.dumps({"error": "missing or wrong token: send the header `Authorization: Bearer TOKEN` with the "
                                    "token `stylesift serve` printed (or the first line of its --token-file)"}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"www-authenticate", b'Bearer realm="stylesift"')]})
        await send({"type": "http.response.body", "body": body})
