"""The scoring service's one error: what went wrong, what to do, and the HTTP status it answers with."""

from __future__ import annotations

from stylesift.errors import StylesiftError


class ServeError(StylesiftError):
    """A request or a server setting the service refuses; ``str()`` says what to do, ``status`` is the HTTP answer.

    Raised by the command line before the server listens (a bad ``--token-file``, a port in use, a
    model of another feature space: the CLI prints it, exit 1) and inside requests (413 too large,
    409 a model of another feature space, 503 the queue is full...), where it becomes
    ``{"error": message}`` with its status.
    """

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = int(status)
