"""Checkpoints: one dict holding the config, model, optimiser, scheduler, scaler, RNG and position.

Written atomically (temp file + rename), so a kill mid-write leaves the previous
checkpoint intact.  ``load_checkpoint`` accepts a file or a run directory (its
``best.pt``).
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lesionprop.fileio import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)
    return path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory -> its ``best.pt``; FileNotFoundError otherwise."""
    p = Path(path)
    if p.is_dir():
        p = p / "best.pt"
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    return p


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load with ``weights_only=True``: tensors and plain containers only, no code runs from the file."""
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{p}: refused to load: the file holds objects other than tensors and plain "
                         f"containers ({first[:200]}); nothing in it was run") from None
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{p}: not a readable checkpoint ({exc})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise ValueError(f"{p}: not a lesionprop checkpoint (no 'model' / 'config' entries)")
    return state


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
