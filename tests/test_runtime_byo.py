"""Bring your own backbone: a tiny ONNX network built here, its sidecar, its own feature space, its file checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnx")

from helpers.networks import SIDECAR, write_network  # noqa: E402

from stylesift.featurizer.backbones.byo import BackboneFileError, byo_fingerprint, is_byo  # noqa: E402
from stylesift.featurizer.extract import Featurizer  # noqa: E402
from stylesift.featurizer.images import load_image  # noqa: E402
from stylesift.featurizer.space import same_space  # noqa: E402
from stylesift.featurizer.store import FeatureSpaceMismatch, FeatureStore  # noqa: E402


def expected(image: np.ndarray) -> np.ndarray:
    x = image[..., ::-1].astype(np.float64) / 255.0  # BGR, scaled
    x = (x - np.array(SIDECAR["mean"])) / np.array(SIDECAR["std"])
    return np.concatenate([x.mean(axis=(0, 1)), x.max(axis=(0, 1))])


def test_features_are_the_network_on_the_sidecars_input(tmp_path, pictures):
    net = write_network(tmp_path / "tiny.onnx")
    fz = Featurizer(backbone_file=net, batch_size=4, workers=2)
    assert fz.weights is None and fz.input_size == 32  # no ResNet50 weights needed
    report = fz.extract(pictures[:5], tmp_path / "s.h5")
    assert report.new == 5 and report.runtime == "openvino"
    with FeatureStore(tmp_path / "s.h5") as st:
        assert st.fingerprint["file_sha256"] == fz.fingerprint["file_sha256"] and st.fingerprint["feature_dim"] == 6
        got = st.features(np.arange(5))
    want = np.stack([expected(load_image(p, 32)) for p in pictures[:5]])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)  # rows in path order, as pictures are


def test_own_feature_space_and_the_recorded_file_is_checked(tmp_path, pictures):
    net = write_network(tmp_path / "tiny.onnx")
    fz = Featurizer(backbone_file=net, workers=2)
    assert is_byo(fz.fingerprint) and fz.fingerprint["sidecar"]["channels"] == "BGR"
    # Another file (other weights), same sidecar: another feature space.
    other = write_network(tmp_path / "other.onnx", extra=1.0)
    assert not same_space(byo_fingerprint(other, feature_dim=6), fz.fingerprint)
    fz.extract(pictures[:2], tmp_path / "s.h5")
    with pytest.raises(FeatureSpaceMismatch):
        Featurizer(backbone_file=other, workers=2).extract(pictures[2:4], tmp_path / "s.h5")
    # Scoring follows the recorded fingerprint; a file with other bytes at that path is refused.
    again = Featurizer.for_fingerprint(fz.fingerprint, workers=2)
    assert again.fingerprint == fz.fingerprint
    write_network(net, extra=2.0)
    with pytest.raises(BackboneFileError, match="sha256"):
        Featurizer.for_fingerprint(fz.fingerprint, workers=2)


def test_sidecar_problems_say_what_to_fix(tmp_path):
    net = write_network(tmp_path / "tiny.onnx")
    net.with_suffix(".json").unlink()
    with pytest.raises(BackboneFileError, match="no sidecar"):
        Featurizer(backbone_file=net)
    net.with_suffix(".json").write_text(json.dumps({**SIDECAR, "layout": "CHWN"}))
    with pytest.raises(BackboneFileError, match="layout"):
        Featurizer(backbone_file=net)
    with pytest.raises(BackboneFileError, match="no such backbone file"):
        Featurizer(backbone_file=tmp_path / "missing.onnx")


def test_extract_cli_with_backbone(tmp_path, pictures):
    from typer.testing import CliRunner

    from stylesift.cli.main import app

    net = write_network(tmp_path / "tiny.onnx")
    result = CliRunner().invoke(app, ["extract", *map(str, pictures[:3]), "--store", str(tmp_path / "s.h5"),
                                      "--backbone", str(net), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["new"], out["runtime"]) == (3, "openvino")
    bad = CliRunner().invoke(app, ["extract", str(pictures[0]), "--store", str(tmp_path / "t.h5"),
                                   "--backbone", str(net), "--precision", "int8"])
    assert bad.exit_code == 1 and "bring-your-own" in bad.output
