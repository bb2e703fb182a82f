"""The Ray engine's errors, and the one place that imports Ray (optional: ``pip install 'stylesift[ray]'``)."""

from __future__ import annotations

from stylesift.errors import StylesiftError


class RayEngineError(StylesiftError, RuntimeError):
    """The cluster could not do (all of) the work; the message says what was saved and what to do."""


class WorkerMismatch(RayEngineError):
    """A worker's backbone would produce features of another feature space than the driver's store."""


class RayOptionError(StylesiftError, ValueError):
    """An option that the Ray engine cannot honour (or that means nothing without it); ``option`` names it."""

    def __init__(self, message: str, option: str):
        super().__init__(message)
        self.option = option


def require_ray():
    """Import and return the ``ray`` module, or raise :class:`RayEngineError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayEngineError("the Ray engine needs Ray, which is not installed: pip install 'stylesift[ray]' "
                             "(on the driver and on every node of the cluster)") from None
    return ray
