"""The typer application and the little the commands share: stderr console, JSON output, exit codes.

Errors: a :class:`~stylesift.errors.StylesiftError` raised anywhere below a command is printed here,
once, as ``error: …`` with exit 1 (:class:`_Group`), and so is an OSError of the machine (a full
disk, a read-only folder). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import json
import math
import sys
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from typer.core import TyperGroup

from stylesift.errors import StylesiftError


class _Group(TyperGroup):
    """The root command group: the one place where a user-fixable error becomes ``error: …`` and exit 1,
    and where every float option of every command refuses nan and ±inf (a usage error, exit 2)."""

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _finite_floats(command)
        return command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except StylesiftError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            hint = _ENVIRONMENT_ERRORS.get(exc.errno)
            if hint is None:
                raise  # anything else is a bug: its traceback is the report
            raise fail(f"{exc.filename or 'a file'}: {exc.strerror or exc}; {hint}") from None


# Errors of the machine, not of stylesift: the user can fix them, so they get one line, not a traceback.
# Every write replaces its file atomically, so what was there before is left as it was.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "the disk is full: free some space and run it again (no file was left half-written)",
    errno.EDQUOT: "the disk quota is used up: free some space and run it again (no file was left half-written)",
    errno.EROFS: "that file system is read-only: choose a folder you can write to",
    errno.EACCES: "permission denied: choose a file or folder you can read and write",
    errno.EPERM: "operation not permitted: choose a file or folder you can read and write",
}


def _finite_floats(command) -> None:
    """Make every option and argument of ``command`` (and of its subcommands) reject nan and ±inf floats.

    ``float("nan")`` passes every range check (all comparisons are false), so ``--threshold nan``
    would silently select nothing; the check lives here so that no command can forget it.
    """
    for param in getattr(command, "params", []):
        if getattr(param, "_finite_checked", False):
            continue

        def process_value(ctx, value, _inner=param.process_value, _param=param):
            value = _inner(ctx, value)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, float) and not math.isfinite(v):
                    raise typer.BadParameter(f"{v} is not a finite number", ctx=ctx, param=_param)
            return value

        param.process_value = process_value
        param._finite_checked = True
    for sub in getattr(command, "commands", {}).values():
        _finite_floats(sub)


app = typer.Typer(
    name="stylesift",
    cls=_Group,
    help="Learn a visual style from example images and pick matching images out of a stream.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# markup=False: nothing printed on stderr is read as rich markup, so a file named `[bold]x.jpg` or the
# advice `pip install 'stylesift[fast]'` comes out exactly as written (styles are given as arguments).
err = Console(stderr=True, markup=False)


def _version(value: bool) -> None:
    if value:
        from stylesift import __version__

        sys.stdout.write(f"stylesift {__version__}\n")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit (loads nothing else).")] = False,
) -> None:
    """Learn a visual style from example images and pick matching images out of a stream."""

# Exit codes, documented in the README.
EXIT_OK, EXIT_FATAL, EXIT_USAGE, EXIT_SOME_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fail(message: str, code: int = EXIT_FATAL) -> typer.Exit:
    """Print an error on stderr and return the Exit to raise (the message is never read as markup)."""
    err.print("error:", style="bold red", end=" ")
    say(message)
    return typer.Exit(code)


def say(message: str) -> None:
    """One line on stderr, taken literally: file names such as ``[bold]x.jpg`` stay as they are."""
    err.print(printable(message), markup=False, highlight=False, soft_wrap=True)


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of file names (``os.fsdecode``'s surrogates) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def use_decode_memory(size: str | None) -> None:
    """Apply ``--decode-memory SIZE`` (a usage error, exit 2, when it is not a size of at least 64 MiB)."""
    if size is None:
        return
    from stylesift.featurizer.images import parse_bytes, set_decode_memory

    try:
        set_decode_memory(parse_bytes(size))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--decode-memory") from None


@contextmanager
def progress_bar(description: str, enabled: bool = True, unit: str = "files"):
    """Yield a ``callback(done, total)`` drawing a progress bar on stderr (a no-op when disabled); rate in ``unit``/s."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, transient=False) as bar:
        task = bar.add_task(description, total=None, rate="")

        def update(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0
            rate = f"{done / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            bar.update(task, completed=done, total=total, rate=rate)

        yield update
