"""The README stays true to the code: its layer table lists exactly the registered types."""

import re
import sys
from pathlib import Path

import engine

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(start, end):
    text = README.read_text()
    return text[text.index(start):text.index(end)]


def test_layer_table_matches_registry():
    table = _section("<!-- layer-table -->", "<!-- /layer-table -->")
    listed = set(re.findall(r"`([A-Za-z0-9]+)`", table))
    assert listed == set(engine.layer_type_list())


def test_readme_opens_with_the_two_commands():
    text = README.read_text()
    head = text[: text.index("## ", 10)]
    assert "tools/train --solver solvers/lenet.prototxt" in head
    assert "python3 -m pytest" in head


def test_ci_runs_the_readmes_test_command_in_a_fresh_venv():
    """.ci/run reads the command from the README, which makes its own virtual environment,
    so a package missing from setup.cfg fails CI as it would fail a user."""
    sys.path.insert(0, str(README.parent / ".ci"))
    from readme_command import readme_commands

    commands = readme_commands()
    assert commands["tests"].startswith("python3 -m venv .venv && . .venv/bin/activate && ")
    assert "python3 -m pytest" in commands["tests"]
    assert "tools/train --solver solvers/lenet.prototxt" in commands["main"]
    run = (README.parent / ".ci" / "run").read_text()
    assert "readme_command.py tests" in run and "rm -rf .venv" in run
