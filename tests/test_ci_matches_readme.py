"""`.ci/run` calls exactly the README's test command."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert "ruff check" in command and "pytest" in command
    assert command in (REPO / "README.md").read_text()
