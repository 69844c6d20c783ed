"""Backbone initialisation from a detector that lesionprop trained itself on synthetic data.

``model.init_backbone`` names a backbone state dict (the detector's ``backbone``
module: ResNet body + FPN, keys ``body.*`` and ``fpn.*``) to start a training from:

* ``synthetic-cpu``: the file shipped in the package (:data:`SHIPPED`), trained by
  lesionprop on synthetic series of seeds disjoint from the demo's and the
  benchmarks' (model card: ``docs/cpu_synth_backbone.md``);
* ``synthetic-cpu-v1``: the same pre-training stopped at half its length (3,000 iterations
  instead of 6,000), a weaker starting point for comparisons;
* any other value: a local file written by :func:`lesionprop.engine.export_backbone.export_backbone`.

With ``model.init_backbone`` the RPN and the box head stay randomly initialised.
``model.init_detector`` names a WHOLE detector state dict instead (backbone, RPN and
box head; every tensor of the model must match): ``synthetic-cpu-detector`` is the
shipped one, the fifth pre-training stage on synthetic data with complete labels balanced
by lesion (``docs/cpu_synth_backbone.md``).  Both ``null`` (the default) train everything
from scratch.  The file holds fp16 tensors (half the size); they are cast to the model's
dtype when loaded.

Export the backbone of a finished training run::

    python -m lesionprop.engine.export_backbone RUN/last.pt OUT.pt            # ResNet + FPN
    python -m lesionprop.engine.export_backbone RUN/last.pt OUT.pt --whole    # the whole detector
"""

from __future__ import annotations

import pickle
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from lesionprop.errors import InputError, MissingInputError

#: name -> file in the package (``lesionprop/model/weights/``)
SHIPPED = {"synthetic-cpu": "cpu_synth_backbone.pt", "synthetic-cpu-v1": "cpu_synth_backbone_v1.pt"}
#: name -> whole-detector file in the package (``model.init_detector``; also a ``--checkpoint`` of
#: ``predict`` / ``detect``, :func:`lesionprop.engine.checkpoint.load_checkpoint`)
SHIPPED_DETECTORS = {"synthetic-cpu-detector": "cpu_synth_detector.pt"}
#: name -> (preset, overrides) it was trained with (docs/cpu_synth_backbone.md: ``--preset cpu
#: --set data.aug_crop_px=160``); the files hold weights only, this builds their model
SHIPPED_DETECTOR_CONFIGS = {"synthetic-cpu-detector": ("cpu", ("data.aug_crop_px=160",))}


def resolve(spec: str | Path, shipped: dict[str, str] = SHIPPED, key: str = "model.init_backbone") -> Path:
    """The file of ``key``: a name of ``shipped`` or a path; FileNotFoundError when missing."""
    if str(spec) in shipped:
        path = Path(str(resources.files("lesionprop.model") / "weights" / shipped[str(spec)]))
    else:
        path = Path(spec)
    if not path.is_file():
        raise MissingInputError(f"{key}: no file {path} (shipped names: {', '.join(shipped)})")
    return path


def backbone_state(model_state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16
                   ) -> dict[str, torch.Tensor]:
    """The ResNet + FPN tensors of a detector state dict (``backbone.body.*``: the module inside the
    3D-context wrapper), prefix removed, floats cast to ``dtype``."""
    prefix = "backbone.body."
    out = {k.removeprefix(prefix): v for k, v in model_state.items() if k.startswith(prefix)}
    if not out:
        raise InputError(f"the state dict holds no {prefix}* tensors (not a detector checkpoint?)")
    return _on_cpu(out, dtype)


def detector_state(model_state: dict[str, torch.Tensor], dtype: torch.dtype = torch.float16
                   ) -> dict[str, torch.Tensor]:
    """Every tensor of a detector state dict, floats cast to ``dtype`` (the ``--whole`` export)."""
    if not any(k.startswith("roi_heads.") for k in model_state):
        raise InputError("the state dict holds no roi_heads.* tensors (not a detector checkpoint?)")
    return _on_cpu(model_state, dtype)


def _on_cpu(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Detached CPU copies, floating-point tensors cast to ``dtype``."""
    out = {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in out.items()}


def load_detector(model: nn.Module, spec: str | Path) -> Path:
    """Load ``spec`` (a name of :data:`SHIPPED_DETECTORS` or a file) into a whole detector;
    returns the file.  Every tensor must be there with the same shape (ValueError naming the first
    that is not), so another width, depth, head size or number of slices never loads half-way."""
    path = resolve(spec, SHIPPED_DETECTORS, "model.init_detector")
    _load_exact(model, _read(path), path, "a detector state dict for this model (another preset or data.num_slices?)")
    return path


def _read(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors (``weights_only``: nothing in the file runs); ValueError naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise InputError(f"{path}: not a readable weights file ({first})") from None
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a state dict (a {type(state).__name__})")
    return state


def _load_exact(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise InputError(f"{path}: not {what}; missing {missing[:3]} ({len(missing)} of {len(own)} tensors)")
    for k, v in own.items():
        if state[k].shape != v.shape:
            raise InputError(f"{path}: tensor {k} has shape {tuple(state[k].shape)}, "
                             f"the model needs {tuple(v.shape)} (another model.base_width / fpn_channels?)")
    module.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()})


def load_backbone(backbone: nn.Module, spec: str | Path) -> Path:
    """Load ``spec`` (see :func:`resolve`) into ``backbone`` (a ``BackboneWithFPN``); returns the file.

    Every tensor of the backbone must be in the file with the same shape (ValueError naming the
    first that is not): a file of another width or depth never loads half-way.
    """
    path = resolve(spec)
    _load_exact(backbone, _read(path), path, "a backbone state dict for this model")
    return path
