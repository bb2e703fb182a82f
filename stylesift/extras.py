"""Optional dependencies: import one, or say which extra brings it.

The core install scores and trains; plots, the demo's sample photos, fast runtimes, Ray and the
review server are extras (``pip install 'stylesift[plots]'`` and so on; ``[all]`` has every one).
"""

from __future__ import annotations

import importlib

from stylesift.errors import StylesiftError


class MissingExtra(StylesiftError, ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingExtra` naming ``pip install 'stylesift[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtra(f"{purpose} needs {exc.name or module}, which is not installed; install it with "
                           f"`pip install 'stylesift[{extra}]'`") from None
