"""A training run's ``metrics.jsonl``: one JSON object per line (loss records, validation
records with ``val_sensitivity_4fp`` and ``best``), appended as training goes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lesionprop.fileio import atomic_write


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of ``path`` in order ([] when it does not exist); a line cut short by a
    kill (the last one written) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


class MetricsLog:
    """Appends records to ``path``; on resume, records past the checkpoint are dropped."""

    def __init__(self, path: Path, keep_until: int | None, enabled: bool) -> None:
        self.path, self.enabled, self.records = path, enabled, []
        if keep_until is not None:
            self.records = [r for r in read_metrics(path) if r.get("iteration", 0) <= keep_until]
        if enabled:
            with atomic_write(path) as fh:
                fh.writelines(json.dumps(r) + "\n" for r in self.records)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
