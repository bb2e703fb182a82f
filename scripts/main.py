"""Entry point of the ``stylesift`` command: every command is registered here, explicitly.

Command modules only define functions (parse, call the library, print); this list is the CLI's table
of contents. Importing it loads no TensorFlow: commands import the library inside their bodies.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users

from stylesift.cli import bench_cmd, classifier_cmds, featurizer_cmds, loop_cmds, model_cmds, review_cmds, store_cmds  # noqa: E402
from stylesift.cli.app import app  # noqa: E402

# images and the feature store
app.command()(featurizer_cmds.weights)
app.command()(featurizer_cmds.extract)
app.command()(featurizer_cmds.info)
app.add_typer(store_cmds.store_app, name="store")
# models on stored features
app.command()(classifier_cmds.compare)
app.command()(classifier_cmds.train)
app.command()(classifier_cmds.tune)
app.command()(classifier_cmds.score)
app.add_typer(model_cmds.model_app, name="model")
# people
app.command()(review_cmds.demo)
app.command()(loop_cmds.label)
app.command()(loop_cmds.suggest)
app.command()(loop_cmds.review)
# measurements
app.add_typer(bench_cmd.bench_app, name="bench")
bench_cmd.bench_app.command("store")(store_cmds.bench_store)
bench_cmd.bench_app.command("loop")(loop_cmds.bench_loop)


def main() -> None:
    from stylesift.cli import quiet

    quiet.install()
    app()


if __name__ == "__main__":
    main()
