"""docs/python.md runs as written: its ```python blocks, in order, in one namespace, in a fresh
interpreter whose working folder is a temporary one (the blocks use relative paths)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lesionprop

DOC = Path(__file__).resolve().parents[1] / "docs" / "python.md"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: runs the blocks of a JSON list [[first line, code], ...]; an error names the block's line in the doc
DRIVER = """
import json, sys
namespace = {"__name__": "__main__"}
for line, code in json.load(open(sys.argv[1], encoding="utf-8")):
    exec(compile(code, f"docs/python.md, block at line {line}", "exec"), namespace)
print("ALL BLOCKS RAN")
"""


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line of the opening fence, code) of every ```python block, in order."""
    blocks = []
    for m in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.S | re.M):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1)))
    return blocks


def test_python_blocks_are_found():
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 8
    assert all(code.strip() for _, code in blocks)


def test_docs_python_blocks_run_in_order(tmp_path):
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(lesionprop.__file__).resolve().parents[1]),   # this checkout
           "MPLBACKEND": "Agg"}
    run = subprocess.run([sys.executable, "-c", DRIVER, "blocks.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "ALL BLOCKS RAN" in run.stdout, (run.stdout[-3000:] + run.stderr[-5000:])
    png = tmp_path / "froc.png"
    assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_SIGNATURE
    for out in ("test_preds.csv", "train_preds.arrow", "labels_mm_lp.csv", "scan_out/lesions.csv",
                "scan_out/index.html"):
        assert (tmp_path / out).stat().st_size > 0, out
