"""The server process: a socket bound before anything is announced, uvicorn, and a graceful stop.

Order of events in ``stylesift serve``: the socket is bound (a port in use fails before the model
loads), the service starts (network built and warmed, store checked), the token and the address
are printed and flushed, and only then does the socket listen: whoever reads the ``token:`` line
can connect at once. SIGTERM or SIGINT stop taking connections, let the requests in flight finish
(up to ``grace`` seconds), then stop the service (queued batches run, the store is committed).
"""

from __future__ import annotations

import copy
import logging
import signal
import socket
import threading

from stylesift.review.serve.errors import ServeError
from stylesift.review.sockets import bind_tcp, is_loopback  # noqa: F401 - is_loopback: re-exported

DEFAULT_PORT = 8780
BACKLOG = 1024


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port), not yet listening; :class:`ServeError` saying what to do."""
    return bind_tcp(host, port, ServeError, "another server")


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(service, token: str, sock: socket.socket, *, grace: float = 30.0, access_log: bool = False,
          log_level: str = "warning") -> None:
    """Listen on the bound ``sock`` and serve until SIGTERM or SIGINT; returns after the graceful stop.

    ``service`` is stopped on the way out (batches finished, store committed), however the server ends.
    """
    from stylesift.extras import require
    from stylesift.review.serve.app import create_app

    uvicorn = require("uvicorn", "review", "the scoring service")
    _log_to_stderr()
    try:
        sock.listen(BACKLOG)
    except OSError as exc:  # another process bound the same port meanwhile and listened first
        port = sock.getsockname()[1]
        sock.close()
        if service.started:
            service.stop()
        raise ServeError(f"cannot listen on port {port}: {exc.strerror or exc}; pass --port with a free port, or "
                         "--port 0 to pick one") from None
    # The access log is written at level info: asking for it asks for that level. Logs go to stderr (uvicorn
    # writes its access log to stdout), so stdout carries only what the command prints.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config = uvicorn.Config(create_app(service, token), log_level="info" if access_log else log_level, access_log=access_log,
                            log_config=log_config, lifespan="on", timeout_graceful_shutdown=grace, server_header=False)
    server = uvicorn.Server(config)
    # uvicorn answers SIGINT/SIGTERM with a graceful shutdown and then raises the signal again once it has
    # restored the handlers it found: with these in place, that second delivery only ends serve() normally.
    main = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, _noted) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if service.started:  # the lifespan did not run (startup failed): stop it here
            service.stop()
        sock.close()


def _noted(signum, frame) -> None:
    """A stop signal arriving outside uvicorn's own handling: nothing more to do (the server is stopping)."""


def _log_to_stderr() -> None:
    """One line per message of the service on stderr (uvicorn configures only its own loggers)."""
    logger = logging.getLogger("stylesift.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s stylesift serve: %(levelname)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
