"""stylesift's own modules, found from the checkout: every ``.py`` file under the folders that
pyproject's ``[tool.setuptools.package-dir]`` maps to ``stylesift.*`` names, sub-packages included."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def package_dirs() -> dict[str, Path]:
    """``{"stylesift.featurizer": REPO / "featurizer", …}`` as pyproject maps them."""
    import tomllib  # Python 3.11+, as the rest of the tests' pyproject reading

    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: REPO / folder for name, folder in setuptools["package-dir"].items()}


def module_name(file: Path, roots: dict[str, Path] | None = None) -> str:
    """The installed name of the source file ``file`` (``featurizer/store/files.py`` → ``stylesift.featurizer.store.files``)."""
    roots = package_dirs() if roots is None else roots
    file = file.resolve()
    # The deepest root that holds the file (stylesift/ does not hold the others, but be exact anyway).
    name, root = max(((n, r) for n, r in roots.items() if file.is_relative_to(r.resolve())), key=lambda nr: len(nr[1].parts))
    parts = list(file.relative_to(root.resolve()).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([name, *parts])


def source_files() -> dict[str, Path]:
    """``{module name: file}`` for every module of the checkout (``__pycache__`` left out)."""
    roots = package_dirs()
    found = {}
    for root in roots.values():
        for file in sorted(root.rglob("*.py")):
            if "__pycache__" not in file.parts:
                found[module_name(file, roots)] = file
    return found


def package_folders() -> dict[str, Path]:
    """``{package name: folder}`` for every folder with an ``__init__.py`` under the mapped folders."""
    roots = package_dirs()
    return {module_name(init, roots): init.parent
            for root in roots.values() for init in sorted(root.rglob("__init__.py")) if "__pycache__" not in init.parts}


def is_missing_extra(exc: BaseException) -> bool:
    """True when ``exc`` is an import of a third-party package that is not installed (an extra left out)."""
    return isinstance(exc, ModuleNotFoundError) and bool(exc.name) and exc.name.split(".")[0] != "stylesift"


def import_all() -> tuple[dict, dict[str, str]]:
    """Import every module of the checkout: ``({name: module}, {name: missing package})``.

    A module whose optional extra is not installed is skipped (and listed); any other failure raises.
    ``__main__`` modules are left out: importing one runs the command line.
    """
    import importlib

    modules, skipped = {}, {}
    for name in source_files():
        if name.endswith(".__main__"):
            continue
        try:
            modules[name] = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not is_missing_extra(exc):
                raise
            skipped[name] = exc.name
    return modules, skipped
