"""The shape of the project: sizes of modules and classes, the README's length, packaging, test layout."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers.modules import REPO, import_all, package_folders, source_files

MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600
MAX_README_LINES = 460


def test_no_module_or_class_is_too_long():
    files = source_files()
    assert len(files) > 40
    too_long = []
    for name, file in files.items():
        text = file.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{file.relative_to(REPO)}: module of {lines} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                size = node.end_lineno - start + 1
                if size > MAX_CLASS_LINES:
                    too_long.append(f"{file.relative_to(REPO)}:{node.lineno}: class {node.name} of {size} lines "
                                    f"(at most {MAX_CLASS_LINES})")
    assert too_long == []


def test_the_readme_stays_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES}): move detail to docs/"


def test_every_package_folder_is_listed_in_pyproject_and_every_listed_package_exists():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = package_folders()
    assert {"stylesift", "stylesift.featurizer", "stylesift.classifiers", "stylesift.review", "stylesift.cli"} <= set(folders)
    unlisted = sorted(f"{name} ({path.relative_to(REPO)}/)" for name, path in folders.items() if name not in listed)
    assert unlisted == [], "package folders the wheel would leave out: add them to [tool.setuptools] packages"
    assert sorted(listed - set(folders)) == [], "listed in [tool.setuptools] packages but no folder with an __init__.py"


def test_no_test_module_imports_another_test_module_or_conftest():
    tests = Path(__file__).resolve().parent
    local = {f.stem for f in tests.glob("*.py")}  # test modules and conftest; helpers/ is the shared package
    offenders = []
    for file in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                top = name.split(".")[0]
                if top in local or top == "tests":
                    offenders.append(f"{file.relative_to(tests)}:{node.lineno} imports {name}")
    assert offenders == [], "shared test code belongs in tests/helpers/ (import it as helpers.<module>)"


WEIGHT_FIXTURES = {"weights", "featurizer"}  # conftest's: the real ImageNet ResNet50 weights


def _marks(decorators) -> set[str]:
    """``weights`` for ``@pytest.mark.weights`` (called or not) among ``decorators``."""
    names = set()
    for d in decorators:
        d = d.func if isinstance(d, ast.Call) else d
        if isinstance(d, ast.Attribute) and isinstance(d.value, ast.Attribute) and d.value.attr == "mark":
            names.add(d.attr)
    return names


def unmarked_weight_users(source: str) -> list[str]:
    """Tests of ``source`` that need the real weights (through a fixture, however indirectly) but lack ``weights``."""
    tree = ast.parse(source)
    module_marks = set()
    functions = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            module_marks |= _marks(values)
        elif isinstance(node, ast.FunctionDef):
            functions[node.name] = node
    needs = set(WEIGHT_FIXTURES)
    changed = True
    while changed:  # a module fixture that takes a fixture that needs the weights needs them too
        changed = False
        for name, node in functions.items():
            if name not in needs and not name.startswith("test_") and {a.arg for a in node.args.args} & needs:
                needs.add(name)
                changed = True
    return [name for name, node in functions.items() if name.startswith("test_")
            and {a.arg for a in node.args.args} & needs and "weights" not in module_marks | _marks(node.decorator_list)]


def test_the_marker_finder_sees_indirect_fixtures():
    source = ("import pytest\n\n@pytest.fixture\ndef project(featurizer):\n    pass\n\n"
              "def test_a(project):\n    pass\n\n@pytest.mark.weights\ndef test_b(project):\n    pass\n\n"
              "def test_c(tmp_path):\n    pass\n")
    assert unmarked_weight_users(source) == ["test_a"]
    assert unmarked_weight_users("import pytest\npytestmark = [pytest.mark.weights]\n" + source) == []


def test_every_test_that_needs_the_real_weights_is_marked_weights():
    tests = Path(__file__).resolve().parent
    unmarked = [f"{file.name}::{name}" for file in sorted(tests.glob("test_*.py"))
                for name in unmarked_weight_users(file.read_text())]
    assert unmarked == [], "add @pytest.mark.weights (see the markers in pyproject.toml)"


def test_the_import_checks_see_every_module_of_the_checkout():
    modules, skipped = import_all()
    assert {"stylesift.errors", "stylesift.featurizer.images", "stylesift.cli.main"} <= set(modules)
    for name, module in modules.items():  # the checkout's file, not some other copy
        assert Path(module.__file__).resolve() == source_files()[name].resolve(), name


# Run in a fresh interpreter with only the unzipped wheel (and the venv's dependencies) to import from.
WHEEL_IMPORTS = r"""
import importlib, json, sys
site = sys.argv[1]
# The checkout's editable install must not answer: drop its finders and keep the wheel first.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in (getattr(f, "__module__", "") or "")]
sys.path[:] = [site] + [p for p in sys.path if p not in ("", ".")]
imported, missing_extra, failed = [], {}, {}
for name in json.loads(sys.argv[2]):
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] != "stylesift":
            missing_extra[name] = exc.name
        else:
            failed[name] = repr(exc)
        continue
    except Exception as exc:
        failed[name] = repr(exc)
        continue
    if not (module.__file__ or "").startswith(site):
        failed[name] = "imported from " + str(module.__file__)
    else:
        imported.append(name)
print(json.dumps({"imported": imported, "missing_extra": missing_extra, "failed": failed}))
"""


@pytest.mark.slow
def test_the_built_wheel_holds_every_module_and_each_imports_outside_the_checkout(tmp_path):
    # Built from a copy, so setuptools' build/ folder never lands in the checkout.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "artifacts", "*.egg-info",
                                                                "__pycache__", ".pytest_cache", "tests", "benchmarks"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("stylesift-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    in_wheel = sorted(".".join(f.relative_to(site).with_suffix("").parts).removesuffix(".__init__")
                      for f in (site / "stylesift").rglob("*.py"))
    assert sorted(set(source_files()) - set(in_wheel)) == [], "modules of the checkout missing from the wheel"
    wanted = [m for m in in_wheel if not m.endswith(".__main__")]  # importing __main__ runs the command line
    done = subprocess.run([sys.executable, "-c", WHEEL_IMPORTS, str(site), json.dumps(wanted)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}
    assert set(result["imported"]) | set(result["missing_extra"]) == set(wanted)
    assert "stylesift.cli.main" in result["imported"] and "stylesift.featurizer.extract" in result["imported"]
