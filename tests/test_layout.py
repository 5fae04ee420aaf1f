"""harness/ is grouped by job and its dependencies point one way (README, "Layout"):
data <- measuring <- reporting <- running, with paths and config below all of them."""

import ast
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent
# what each part may import from harness (besides itself and the base modules)
MAY_USE = {
    "data": set(),
    "measuring": {"data"},
    "reporting": {"data", "measuring"},
    "running": {"data", "measuring", "reporting"},
}
BASE = {"paths", "config"}


def imported(path: Path) -> set[str]:
    """The harness parts a module imports (the name after `harness.`), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] if node.level == 0 else []
            assert node.level == 0, f"{path}: relative import (harness imports are absolute)"
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "harness" and len(parts) > 1:
                found.add(parts[1])
            if parts[0] == "harness" and len(parts) == 1 and isinstance(node, ast.ImportFrom):
                found |= {a.name for a in node.names}
    return found


def test_every_module_belongs_to_a_part_or_the_base():
    top = {p.stem for p in ROOT.glob("*.py")} - {"__init__", "__main__"}
    assert top == BASE, "a module outside the parts (data, measuring, reporting, running)"


def test_dependencies_point_one_way():
    wrong = []
    for part, allowed in MAY_USE.items():
        for path in (ROOT / part).rglob("*.py"):
            for used in imported(path) - {part} - BASE:
                if used not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports harness.{used}")
    for base in BASE:
        for used in imported(ROOT / f"{base}.py") - BASE:
            wrong.append(f"{base}.py imports harness.{used}")
    assert not wrong, "; ".join(wrong)


def test_the_check_fails_on_a_wrong_way_import(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text("from harness.running import sweep\nimport harness.reporting.check\n")
    assert imported(module) == {"running", "reporting"}
