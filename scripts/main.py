"""Entry point of the ``stylesift`` command: one module of commands per part of the library."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users

from stylesift.cli import (
    bench_cmd,  # noqa: E402,F401  (registers commands)
    classifier_cmds,  # noqa: E402,F401  (registers commands)
    featurizer_cmds,  # noqa: E402,F401  (registers commands)
    review_cmds,  # noqa: E402,F401  (registers commands)
)
from stylesift.cli.app import app  # noqa: E402


def main() -> None:
    from stylesift.cli import quiet

    quiet.install()
    app()


if __name__ == "__main__":
    main()
