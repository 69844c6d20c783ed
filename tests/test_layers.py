"""The package's floors (docs/ARCHITECTURE.md): no import runs up a floor, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "lesionprop"

#: room (top-level module or package) -> floor, bottom (0) to top
FLOORS = {
    "boxes": 0, "errors": 0, "variants": 0, "fileio": 0, "numtext": 0, "segments": 0, "cli": 0, "__init__": 0,
    "__main__": 0,
    "config": 1, "configs": 1,
    "data": 2, "model": 2,
    "annotations": 3, "predictions": 3, "synth": 3, "dataset_stats": 3, "coco": 3,
    "slice_index": 4,
    "labels": 5, "eval": 5,
    "engine": 6,
    "pipeline": 7, "scan": 7, "review": 7,
    "commands": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the lesionprop modules it imports (anywhere in it, function bodies too)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t.startswith("lesionprop."):
                    dep = t[len("lesionprop."):]
                    while dep and dep not in modules:
                        dep = dep.rpartition(".")[0]
                    if dep and dep != name:
                        deps.add(dep)
        out[name] = deps
    return out


def _room(module: str) -> str:
    return module.split(".")[0]


def test_every_room_has_a_floor():
    assert {_room(m) for m in _imports()} <= set(FLOORS), set(_room(m) for m in _imports()) - set(FLOORS)


def test_no_import_runs_up_a_floor():
    up = [(m, d) for m, deps in _imports().items() for d in deps
          if FLOORS[_room(d)] > FLOORS[_room(m)] and _room(m) not in ("cli", "__main__")]
    # cli dispatches to commands by module name (importlib), never by an import statement
    assert up == []


def test_eval_does_not_import_labels_and_data_does_not_import_synth():
    imports = _imports()
    assert not any(_room(d) == "labels" for m, deps in imports.items() if _room(m) == "eval" for d in deps)
    assert not any(_room(d) in ("synth", "annotations") for m, deps in imports.items() if _room(m) == "data"
                   for d in deps)


def test_no_import_cycles():
    imports = _imports()
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(imports.get(m, ())):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(imports):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def _third_party_uses() -> list[tuple[str, str]]:
    """(module, what) for every ``import X`` / ``from X import``, and every ``X.use(...)`` call."""
    out = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                out += [(name, a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                out.append((name, node.module))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use" \
                    and isinstance(node.func.value, ast.Name):
                out.append((name, f"{node.func.value.id}.use()"))
    return out


def test_notebook_safe_progress_bars_and_figures():
    """In Jupyter: progress bars from tqdm.auto (plain tqdm prints text lines in a notebook), and no
    pyplot or matplotlib.use() in the package (it switched a notebook's inline backend to Agg)."""
    uses = _third_party_uses()
    assert any(what == "tqdm.auto" for _, what in uses)
    assert [(m, w) for m, w in uses if w == "tqdm" or w.startswith("tqdm.") and w != "tqdm.auto"] == []
    assert [(m, w) for m, w in uses if w in ("matplotlib.pyplot", "matplotlib.use()", "pylab")] == []
