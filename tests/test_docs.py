"""The README documents what the code has: every column, every mechanism, every sweep."""

from pathlib import Path

import pytest

import attention_zoo as zoo
from harness.data.rows import markdown_columns

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_column_table_is_the_schema():
    assert markdown_columns() in README, "regenerate it: python -m harness.data.rows"


@pytest.mark.parametrize("name", zoo.available())
def test_every_mechanism_is_documented(name):
    assert f"| {name} |" in README


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (ROOT / "conf" / "sweep").glob("*.yaml")))
def test_every_sweep_is_documented(sweep):
    assert f"sweep={sweep}" in README
