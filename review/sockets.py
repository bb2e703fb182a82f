"""The listening socket of stylesift's web servers (the review page and the scoring service), made one way."""

from __future__ import annotations

import socket

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (the servers' safe default)."""
    return host in _LOOPBACK or host.startswith("127.")


def bind_tcp(host: str, port: int, error: type[Exception], who: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0: any free port), not yet listening; else ``error`` saying what to do.

    ``who`` names what may already hold the port, for the message.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY only on connections whose socket says TCP, and
    # without it every response waits ~40 ms for the client's delayed ACK (Nagle), measured in docs/serve.md.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno in (98, 48, 10048):  # EADDRINUSE on Linux, macOS, Windows
            raise error(f"port {port} on {host} is in use ({who}?); pass --port with a free port, or --port 0 to "
                        "pick one") from None
        raise error(f"cannot listen on {host}:{port}: {exc.strerror or exc}; check --host and --port") from None
    return sock
