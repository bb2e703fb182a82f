"""The one family of errors stylesift raises for things a user can fix.

Every message names the file, what was expected and what to do next. The command line prints a
:class:`StylesiftError` as ``error: …`` and exits 1; anything else is a bug and keeps its traceback.

Every exception class stylesift defines belongs to the family, most also subclassing the built-in
they always were (``ImageError`` and ``LabelError`` are also ``ValueError``, ``StoreError`` and
``BundleError`` also ``RuntimeError``, ``MissingExtra`` also ``ImportError``), so older ``except``
clauses keep working. The only ones outside are internal signals, raised and caught inside
stylesift, that never reach a caller; ``tests/test_cli_errors.py`` imports every module to check.
"""

from __future__ import annotations


class StylesiftError(Exception):
    """Base of every error a user can act on; ``str(exc)`` is the whole message."""
