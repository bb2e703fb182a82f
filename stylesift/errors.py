"""The one family of errors stylesift raises for things a user can fix.

Every message names the file, what was expected and what to do next. The command line prints a
:class:`StylesiftError` as ``error: …`` and exits 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class StylesiftError(Exception):
    """Base of every error a user can act on; ``str(exc)`` is the whole message."""
