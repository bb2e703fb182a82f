"""The README's Python API example, executed as written (on pictures this test makes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.pictures import write_pictures, write_textures

pytestmark = [pytest.mark.weights, pytest.mark.slow]
README = Path(__file__).resolve().parents[1] / "README.md"


def api_example() -> str:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def test_readme_python_api_example_runs(tmp_path, monkeypatch, weights, capsys):
    monkeypatch.chdir(tmp_path)
    write_pictures(tmp_path / "photos" / "good", 10, seed=1)
    write_textures(tmp_path / "photos" / "ordinary", 10, seed=2)
    new = write_pictures(tmp_path / "photos" / "new", 2, seed=7) + write_textures(tmp_path / "photos" / "new", 2, seed=8)
    exec(compile(api_example(), str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert "10 new images" in out and (tmp_path / "report.html").exists() and (tmp_path / "model.ssmodel").exists()
    # The smooth pictures score as "good", the busy textures do not.
    scores = {Path(line.split()[0]).name: float(line.split()[1]) for line in out.splitlines() if "photos/new/" in line}
    assert len(scores) == len(new)
    assert min(scores[p.name] for p in new[:2]) > max(scores[p.name] for p in new[2:])
