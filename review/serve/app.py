"""The HTTP API of the scoring service: FastAPI routes over one :class:`~stylesift.review.serve.service.ScoringService`.

Routes: ``POST /score`` (multipart ``files``, or ``{"paths": [...]}`` with ``--allow-paths``),
``POST /reload`` (``{"path": ...}`` optional), ``GET /model``, ``GET /health`` (the only one without
the token), and the OpenAPI page at ``/docs`` (its schema at ``/openapi.json``). Every answer is
JSON; an error is ``{"error": "one line"}``, never a traceback.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations (``Request``,
# imported inside :func:`create_app` so that fastapi stays an optional extra) as live objects.
import json
import logging
from contextlib import asynccontextmanager

from stylesift.errors import StylesiftError
from stylesift.review.serve.auth import BearerAuth
from stylesift.review.serve.errors import ServeError
from stylesift.review.serve.uploads import FIELD, MAX_JSON_BYTES, parse_paths, read_body, read_multipart

log = logging.getLogger("stylesift.serve")

_SCORE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": [FIELD], "properties": {
            FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                    "description": "Image files (repeat the field for several)."}}}},
        "application/json": {"schema": {"type": "object", "required": ["paths"], "properties": {
            "paths": {"type": "array", "items": {"type": "string"},
                      "description": "Files on the server's machine, inside its --allow-paths folder."}}}},
    },
}
_SCORE_RESPONSES = {
    200: {"description": "At least one image scored: `{results: [{filename, sha256, score, selected, seen_before, group, "
                         "group_size} or {filename, error}], model: {file, version}}`, in request order."},
    401: {"description": "Missing or wrong token."},
    403: {"description": "Paths sent to a server started without --allow-paths."},
    413: {"description": "Body, image count, or (when nothing scored) an image's size or decode memory over the limits."},
    415: {"description": "Neither multipart/form-data nor application/json."},
    422: {"description": "No image could be scored (each result says why)."},
    503: {"description": "The queue is full or the server is stopping; retry."},
}


def create_app(service, token: str):
    """The FastAPI application serving ``service`` to holders of ``token`` (the service is started on startup
    unless it is already, and stopped on shutdown, after the requests in flight)."""
    from stylesift.extras import require

    fastapi = require("fastapi", "review", "the scoring service")
    from fastapi import Depends, Request
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPBearer
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    from stylesift import __version__

    @asynccontextmanager
    async def lifespan(app):
        if not service.started:
            service.start()
        try:
            yield
        finally:
            service.stop()

    app = fastapi.FastAPI(title="stylesift serve", version=__version__, lifespan=lifespan, redoc_url=None,
                          description="Score images with a stylesift model. Every route but /health needs "
                                      "`Authorization: Bearer TOKEN`.")
    app.add_middleware(BearerAuth, token=token)
    # Only for the OpenAPI page (its Authorize button); BearerAuth checks every request before any route runs.
    bearer = [Depends(HTTPBearer(auto_error=False))]

    @app.exception_handler(ServeError)
    async def refused(request: Request, exc: ServeError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect):
        # The client hung up while sending its body: nobody reads this answer, and it is not a failure of ours.
        return Response(status_code=400)

    @app.exception_handler(StylesiftError)
    async def failed(request: Request, exc: StylesiftError):
        log.error("%s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}, status_code=500)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); the server's log has the details"},
                            status_code=500)

    @app.get("/health")
    def health():
        """Whether the server is up (no token needed)."""
        return service.health()

    @app.get("/model", dependencies=bearer)
    def model():
        """The model in use: its file, version (1, then one more per swap), header; and the service's counters."""
        return {**service.slot.current.info(), "service": service.state()}

    @app.post("/score", dependencies=bearer, openapi_extra={"requestBody": _SCORE_BODY}, responses=_SCORE_RESPONSES)
    async def score(request: Request):
        """Score one or many images; one result per image, in request order."""
        s = service.settings
        kind = request.headers.get("content-type", "")
        declared = request.headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            raise ServeError("the Content-Length header is not a number", 400)
        if declared is not None and int(declared) > s.max_request_bytes:
            raise ServeError(f"a request body of {int(declared):,} bytes is over the server's limit of "
                             f"{s.max_request_bytes:,}; send fewer or smaller images per request (or start the server "
                             "with a larger --max-request-size)", 413)
        is_json = kind.split(";")[0].strip().lower() == "application/json"
        if not (is_json or kind.lower().startswith("multipart/form-data")):
            raise ServeError(f"send the images as multipart/form-data (field `{FIELD}`) or a JSON body "
                             '{"paths": [...]}, not ' + (kind or "a body without a Content-Type"), 415)
        # Body memory held for the request: the declared size, else the most it may be; a paths request
        # also holds the files it reads (at most one request's worth).
        hold = (int(declared) if declared is not None else s.max_request_bytes) + (s.max_request_bytes if is_json else 0)
        async with service.admitted(hold):
            if is_json:
                raw = await read_body(request.stream(), min(MAX_JSON_BYTES, s.max_request_bytes))
                uploads = parse_paths(raw, s.allow_paths, max_images=s.max_images)
            else:
                uploads = await read_multipart(request.stream(), kind, max_bytes=s.max_request_bytes,
                                               max_images=s.max_images)
            status, body = await service.score(uploads)
        return JSONResponse(body, status_code=status)

    @app.post("/reload", dependencies=bearer)
    async def reload(request: Request):
        """Swap the model: the server's MODEL file again, or `{"path": FILE}` in the model's folder; 409 when refused."""
        raw = await read_body(request.stream(), 64 * 1024)
        path = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                raise ServeError('the body must be empty or JSON: {"path": "model-002.ssmodel"}', 400) from None
            if not isinstance(body, dict) or not isinstance(body.get("path", ""), str):
                raise ServeError('the body must be empty or JSON: {"path": "model-002.ssmodel"}', 400)
            path = service.slot.allowed_path(body["path"]) if body.get("path") else None
        return await run_in_threadpool(service.slot.reload, path)  # loading reads and checks the file: off the loop

    return app
