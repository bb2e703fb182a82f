"""Entry point of the ``stylesift`` command: every command is registered here, explicitly.

Command modules only define functions (parse, call the library, print); this list is the CLI's table
of contents. Importing it loads no TensorFlow: commands import the library inside their bodies.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for users

from stylesift.cli import (  # noqa: E402
    bench_cmds,
    demo_cmd,
    extract_cmds,
    model_cmds,
    review_cmds,
    score_cmd,
    serve_cmd,
    similar_cmds,
    store_cmds,
    train_cmds,
)
from stylesift.cli.app import app  # noqa: E402

# images and the feature store
app.command()(extract_cmds.weights)
app.command()(extract_cmds.extract)
app.command()(extract_cmds.info)
app.add_typer(store_cmds.store_app, name="store")
app.command()(similar_cmds.similar)
# models on stored features
app.command()(train_cmds.compare)
app.command()(train_cmds.train)
app.command()(train_cmds.tune)
app.command()(score_cmd.score)
app.command()(similar_cmds.rank)
app.add_typer(model_cmds.model_app, name="model")
# people
app.command()(demo_cmd.demo)
app.command()(review_cmds.label)
app.command()(review_cmds.suggest)
app.command()(review_cmds.review)
# apps
app.command()(serve_cmd.serve)
# measurements
app.add_typer(bench_cmds.bench_app, name="bench")
bench_cmds.bench_app.command("store")(bench_cmds.bench_store)
bench_cmds.bench_app.command("loop")(bench_cmds.bench_loop)
bench_cmds.bench_app.command("index")(bench_cmds.bench_index)
bench_cmds.bench_app.command("serve")(bench_cmds.bench_serve)


def main() -> None:
    from stylesift.cli import quiet

    quiet.install()
    app()


if __name__ == "__main__":
    main()
