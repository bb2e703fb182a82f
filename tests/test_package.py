"""The installed distribution: one top-level name, a lazy public API, the version."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ folder never lands in the checkout.
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "artifacts", "*.egg-info",
                                                                "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, timeout=300)
    (found,) = out.glob("stylesift-*.whl")
    return found


def test_wheel_installs_only_the_stylesift_name(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top_level).decode().split() == ["stylesift"]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"stylesift"}
    for module in ("stylesift/__init__.py", "stylesift/cli/main.py", "stylesift/featurizer/store/__init__.py",
                   "stylesift/classifiers/predict.py", "stylesift/review/report.py"):
        assert module in names
    assert not any(n.startswith(("stylesift/benchmarks", "stylesift/tests")) for n in names)


def _run(code: str) -> subprocess.CompletedProcess:
    # From a folder outside the checkout, so only the installed package can answer.
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=120)


def test_import_is_lazy_and_versioned():
    done = _run("import sys, stylesift; print(stylesift.__version__); "
                "print(any(m.startswith(('tensorflow', 'keras', 'sklearn')) for m in sys.modules))")
    assert done.returncode == 0, done.stderr
    version, heavy = done.stdout.split()
    assert version.count(".") == 2 and heavy == "False"


def test_public_names_resolve_to_stylesift_modules():
    import stylesift

    for name in stylesift.__all__:
        if name == "__version__":
            continue
        obj = getattr(stylesift, name)
        assert obj.__module__.startswith("stylesift."), (name, obj.__module__)
    with pytest.raises(AttributeError):
        stylesift.no_such_name  # noqa: B018


@pytest.mark.parametrize("bare", ["featurizer", "classifiers", "review", "scripts"])
def test_no_bare_top_level_packages(bare):
    assert _run(f"import {bare}").returncode != 0


def test_version_command_loads_nothing_heavy():
    exe = Path(sys.executable).with_name("stylesift")
    done = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60, cwd="/")
    import stylesift

    assert done.returncode == 0 and done.stdout.strip() == f"stylesift {stylesift.__version__}"


def test_a_missing_extra_names_the_install_command(monkeypatch):
    from stylesift.classifiers.plots import _pyplot
    from stylesift.errors import StylesiftError

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the [plots] extra were not installed
    with pytest.raises(StylesiftError, match=r"pip install 'stylesift\[plots\]'"):
        _pyplot()


def test_core_dependencies_leave_plots_demo_ray_and_fast_runtimes_to_extras():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for optional in ("matplotlib", "scikit-image", "ray", "openvino", "onnxruntime"):
        assert optional not in core
    extras = project["optional-dependencies"]
    assert {"plots", "demo", "ray", "fast", "all", "dev"} <= set(extras)
    assert any("stylesift[all]" in d for d in extras["dev"])
