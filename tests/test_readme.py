"""The README stays true to the code: its layer table lists exactly the registered types."""

import re
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
