"""Start-up: scoring with a runtime that does not need TensorFlow never imports it (whole process, as a user runs it)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnx")

from helpers.networks import write_network  # noqa: E402  (pytest puts tests/ on sys.path)

PROBE = """
import sys
from stylesift.cli.main import main
sys.argv = ["stylesift", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print("TENSORFLOW_IMPORTED", "tensorflow" in sys.modules, "KERAS_IMPORTED", "keras" in sys.modules, file=sys.stderr)
"""


def cli(*args):
    from typer.testing import CliRunner

    from stylesift.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_score_with_an_openvino_backbone_does_not_import_tensorflow(tmp_path, make_pictures):
    net = write_network(tmp_path / "tiny.onnx")
    store, model = tmp_path / "s.h5", tmp_path / "m.skops"
    cli("extract", *make_pictures(tmp_path / "pos", 12, seed=1), "--store", store, "--backbone", net, "--label", "positive")
    cli("extract", *make_pictures(tmp_path / "neg", 12, seed=2), "--store", store, "--backbone", net, "--label", "negative")
    cli("train", "--store", store, "--positive", "positive", "--negative", "negative", "--method", "two-class-default",
        "--out", model)
    new = make_pictures(tmp_path / "new", 1, seed=3)[0]
    done = subprocess.run([sys.executable, "-c", PROBE, "score", str(model), str(new), "--store", str(store), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 1
    assert "TENSORFLOW_IMPORTED False KERAS_IMPORTED False" in done.stderr
