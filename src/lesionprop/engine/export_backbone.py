"""Export the backbone (ResNet body + FPN) of a training run as an fp16 state dict, the file
``model.init_backbone`` starts a training from, or with ``--whole`` every tensor of the
detector, the file of ``model.init_detector`` (:mod:`lesionprop.model.pretrain`)::

    python -m lesionprop.engine.export_backbone RUN/last.pt OUT.pt [--whole]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lesionprop.engine.checkpoint import load_checkpoint
from lesionprop.errors import InputError
from lesionprop.fileio import atomic_write
from lesionprop.model.pretrain import backbone_state, detector_state


def export_backbone(checkpoint: str | Path, out: str | Path, *, whole: bool = False) -> Path:
    """Write the backbone (``whole``: the whole detector) of a training checkpoint as an fp16
    state dict (atomically)."""
    model_state = load_checkpoint(checkpoint)["model"]
    state = detector_state(model_state) if whole else backbone_state(model_state)
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise InputError(f"{out}: refusing to overwrite the input checkpoint")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out, "wb") as fh:
        torch.save(state, fh)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="export a training run's backbone (ResNet + FPN) as an fp16 state dict")
    ap.add_argument("checkpoint", help="a checkpoint file or a run directory (its best.pt)")
    ap.add_argument("out", help="output .pt file")
    ap.add_argument("--whole", action="store_true",
                    help="every tensor of the detector (RPN and box head too): a model.init_detector file")
    args = ap.parse_args(argv)
    path = export_backbone(args.checkpoint, args.out, whole=args.whole)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
