"""Checkpoints: one dict holding the config, model, optimiser, scheduler, scaler, RNG and position.

Written atomically (temp file + rename), so a kill mid-write leaves the previous
checkpoint intact.  ``load_checkpoint`` accepts a file, a run directory (its
``best.pt``) or the name of a detector shipped in the package
(:data:`lesionprop.model.pretrain.SHIPPED_DETECTORS`, e.g. ``synthetic-cpu-detector``): its
file holds weights only, so the checkpoint is completed with the config it was trained with
(:data:`lesionprop.model.pretrain.SHIPPED_DETECTOR_CONFIGS`).
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesionprop.errors import InputError, MissingInputError
from lesionprop.fileio import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return path


def _shipped_file(name: str) -> Path:
    from lesionprop.model.pretrain import SHIPPED_DETECTORS, resolve

    return resolve(name, SHIPPED_DETECTORS, "--checkpoint")


def shipped_name(path: str | Path) -> str | None:
    """The shipped detector ``path`` designates (its name, or a path to its file or to an identical
    copy of it), else None."""
    import filecmp

    from lesionprop.model.pretrain import SHIPPED_DETECTORS

    if str(path) in SHIPPED_DETECTORS:
        return str(path)
    p = Path(path)
    if not p.is_file():
        return None
    for name, file in SHIPPED_DETECTORS.items():
        try:
            shipped = _shipped_file(name)
        except FileNotFoundError:
            continue
        if p.resolve() == shipped.resolve() or (p.name == file and filecmp.cmp(p, shipped, shallow=False)):
            return name
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, a run directory -> its ``best.pt``, or a shipped detector's name -> its file;
    FileNotFoundError (listing the shipped names) otherwise."""
    from lesionprop.model.pretrain import SHIPPED_DETECTORS

    if str(path) in SHIPPED_DETECTORS:
        return _shipped_file(str(path))
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt"
    if not p.is_file():
        raise MissingInputError(f"checkpoint not found: {p} (give a checkpoint file, a run directory holding "
                                f"best.pt, or a shipped detector: {', '.join(SHIPPED_DETECTORS)})")
    return p


def shipped_checkpoint(name: str) -> dict[str, Any]:
    """A shipped detector as a checkpoint: its weights (cast to float32) and the config it was trained
    with.  Loading into that config's model is exact (``strict``; tested)."""
    from lesionprop.config import load_config
    from lesionprop.model.pretrain import SHIPPED_DETECTOR_CONFIGS

    preset, overrides = SHIPPED_DETECTOR_CONFIGS[name]
    path = _shipped_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return {"model": model, "config": load_config(preset=preset, overrides=overrides).to_dict(), "shipped": name}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, no code runs from the file.
    A shipped detector (name or file, :func:`shipped_name`) comes with its training config."""
    name = shipped_name(path)
    if name is not None:
        return shipped_checkpoint(name)
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        foreign = re.search(r"Unsupported global: GLOBAL \S+", str(exc))
        if foreign:              # a torch file holding objects the weights-only loader does not rebuild
            raise InputError(f"{p}: refused to load: the file holds objects other than tensors and plain "
                             f"containers ({foreign.group(0)}); nothing in it was run") from None
        raise InputError(f"{p} is not a lesionprop checkpoint (torch could not load it as one: "
                         f"{_load_failure(p, exc)})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        from lesionprop.model.pretrain import SHIPPED_DETECTORS

        bare = isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())
        hint = (" (weights only, e.g. an export_backbone file: no config to build the model from)" if bare else "")
        raise InputError(f"{p} is not a lesionprop checkpoint (no 'model' / 'config' entries){hint}; a training "
                         f"run's checkpoint or a shipped detector name works: {', '.join(SHIPPED_DETECTORS)}")
    return state


def _load_failure(path: Path, exc: Exception) -> str:
    """A short reason why ``torch.load`` failed on ``path``: the file's kind when it is no torch file
    at all, else the first sentence of torch's message."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "the file is empty"
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):    # zip (torch >= 1.6) or legacy pickle
        return "not a file written by torch.save"
    text = str(exc).strip()
    unpickler = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if unpickler:
        return f"the weights-only loader cannot read it: {unpickler.group(1).strip()[:120]}"
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)     # C++ assertion location
    return (text.split(". ")[0].strip() or type(exc).__name__)[:160]


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))   # plain types: weights_only loads
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
