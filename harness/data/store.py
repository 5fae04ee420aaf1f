"""A sweep's files, known here alone: its plan, the rows its jobs write, an index of finished
measurements, the doctor's findings, results.csv. Each is read once per process.

The index holds, per cell (its identity without the size, and its revision), one small entry
per measurement (size and trial): a job deciding whether to resume or to skip after an OOM
reads its own cell's entries, not every sibling's row. Entries are written beside the row, the
same atomic way; a sweep directory from before the index is read through its rows instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from harness.data import rows

PLAN = "sweep.json"
DOCTOR_JSON = "doctor.json"
DOCTOR_TEXT = "doctor.txt"
INDEX = ".index"
_BULKY = ("step_times_ms", "timing_note", "energy_note")  # not needed to decide a skip
SUPERSEDED = "result.superseded.json"  # a row measured again since: kept, not read
ROW_PATH = "_row"  # an entry's row, relative to the sweep: a deleted row is not a measurement


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _cell(row: dict[str, Any]) -> str:
    """The index directory of a row's cell: identity without the size, and its revision."""
    columns = tuple(c for c in rows.IDENTITY if c not in rows.SIZE) + ("revision",)
    return _digest(rows.identity(row, columns))


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ------------------------------------------------------------ plan

    def write_plan(self, plan: dict[str, Any]) -> None:
        rows.write_json(self.root / PLAN, plan)
        self.__dict__.pop("plan", None)

    @cached_property
    def plan(self) -> dict[str, Any]:
        """The sweep's plan ({} when there is none: a single run, or an unwritable plan)."""
        try:
            found: dict[str, Any] = json.loads((self.root / PLAN).read_text())
        except (OSError, ValueError):
            return {}
        return found

    # ------------------------------------------------------------ rows

    def record(self, job_dir: Path, row: dict[str, Any]) -> Path:
        """A job's row, and its index entry. A measurement made again (an `error` resumed from
        a job directory of another name, e.g. after a changed timing setting) supersedes the
        earlier row: it is kept beside, as `result.superseded.json`, and no longer read, so a
        sample has one row."""
        path = rows.write_row(job_dir, row)
        entry = {k: v for k, v in row.items() if k not in _BULKY}
        entry[ROW_PATH] = str(path.resolve().relative_to(self.root.resolve()))
        index = self.root / INDEX / _cell(entry) / f"{_digest(rows.sample_key(entry))}.json"
        with contextlib.suppress(OSError, ValueError):
            earlier = self.root / str(json.loads(index.read_text()).get(ROW_PATH, ""))
            if earlier.is_file() and earlier.resolve() != path.resolve():
                earlier.replace(earlier.with_name(SUPERSEDED))
        rows.write_json(index, entry)
        return path

    def entries(self, cell: dict[str, Any]) -> list[dict[str, Any]]:
        """The finished measurements of this cell at every size and trial (same revision)."""
        if not (self.root / INDEX).is_dir():  # a sweep from before the index
            return rows.read_rows(self.root)
        found = []
        for path in sorted((self.root / INDEX / _cell(cell)).glob("*.json")):
            try:
                entry = rows.read_row(path)
            except (OSError, ValueError):
                continue
            if (self.root / str(entry.pop(ROW_PATH, ""))).is_file():  # the row is the truth
                found.append(entry)
        return found

    def write_results(self) -> tuple[Path, pd.DataFrame]:
        return rows.write_results(self.root)

    # ------------------------------------------------------------ environment

    def save_doctor(self, result: dict[str, Any], text: str) -> Path:
        rows.write_json(self.root / DOCTOR_JSON, result)
        return rows.write_atomic(self.root / DOCTOR_TEXT, (text + "\n").encode())

    def doctor(self) -> dict[str, Any] | None:
        """attnbench-doctor's findings at the sweep's start, if it stored them."""
        try:
            found: dict[str, Any] = json.loads((self.root / DOCTOR_JSON).read_text())
        except (OSError, ValueError):
            return None
        return found
