"""CI runs the slow tests too: the marker expression of .ci/run's pytest call selects them."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path

from _pytest.mark.expression import Expression

ROOT = Path(__file__).resolve().parents[1]


def marker_expression(args: list[str]) -> str:
    """The -m expression pytest uses: the last -m given, pyproject's addopts first."""
    addopts = shlex.split(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
                          .get("addopts", ""))
    expr = ""
    words = [*addopts, *args]
    for i, word in enumerate(words):
        if word == "-m":
            expr = words[i + 1]
        elif word.startswith("-m") and len(word) > 2:
            expr = word[2:]
    return expr


def selects(expr: str, marks: set[str]) -> bool:
    return not expr or Expression.compile(expr).evaluate(lambda name: name in marks)


def test_ci_runs_slow_tests_in_one_pytest_call_and_the_readme_says_so():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
             if "-m pytest" in line and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines            # one call: its last line is pytest's summary of everything
    call = shlex.split(lines[0])
    args = call[call.index("pytest") + 1:]
    expr = marker_expression(args)
    assert selects(expr, {"slow"}) and selects(expr, set()) and not selects(expr, {"gpu"}), expr
    assert not selects(marker_expression([]), {"slow"})      # the default run stays quick
    assert lines[0] in (ROOT / "README.md").read_text()     # the README shows CI's command as it is
