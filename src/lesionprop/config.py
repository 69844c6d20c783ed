"""The one typed configuration of lesionprop, read in one place.

A config is a tree of frozen dataclasses.  Presets live in
``lesionprop/configs/*.yaml``; a YAML file only needs the keys it changes
(``preset: cpu`` at its top starts from a preset).  Command-line overrides use
dotted keys: ``train.iterations=200``.  The resolved config is saved into every
run directory and checkpoint (``Config.to_dict``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from lesionprop.errors import ConfigError
from lesionprop.variants import VARIANT_NAMES


@dataclass(frozen=True)
class DataConfig:
    """How a multi-slice (3DCE) sample is built from the stored slices."""

    num_slices: int = 9                     # 3 x M slices (M groups of 3)
    slice_interval_mm: float = 2.0          # neighbours resampled to this z spacing
    window: tuple[float, float] = (-1024.0, 3071.0)   # HU mapped to 0..255
    clip_border: bool = False               # crop to the body's bounding box
    target_spacing_mm: float = 0.8          # rescale pixels to this spacing
    max_size: int = 512                     # then cap the longer side
    # training augmentation (MULAN-style)
    aug_scale: tuple[float, float] = (0.8, 1.2)
    aug_shift_px: int = 8                   # max shift, pixels of the stored slice
    aug_flip: bool = True
    aug_crop_px: int = 0                    # train on square crops this big holding a lesion (0: whole slices)
    sample_dtype: str = "uint8"             # uint8 (0..255 rounded: 4x less to move between processes) | float32
    cache_dir: str | None = None            # on-disk memory-mapped slice cache (None: in memory only)
    cache_mb: int = 256                     # in-memory decoded-slice cache per loader process, MiB
    num_workers: int | None = None          # loader processes per rank; None: chosen from the cores (engine.loader)


@dataclass(frozen=True)
class ModelConfig:
    """The FPN-3DCE detector (torchvision Faster R-CNN parts)."""

    backbone: str = "resnet50"              # resnet50 | resnet18 | resnet10
    pretrained: str | None = None           # imagenet (torchvision's weights, torch hub cache) or a local file
    init_backbone: str | None = None        # ResNet + FPN weights to start from: synthetic-cpu (shipped) or a file
    init_detector: str | None = None        # whole-detector weights to start from: synthetic-cpu-detector or a file
    trainable_layers: int = 3               # 0..5 ResNet stages trained with loaded weights (random init: all)
    base_width: int = 64                    # basic-block ResNets: narrower than 64 for CPU presets
    norm: str = "auto"                      # auto (frozen_bn if pretrained else gn) | frozen_bn | bn | gn
    pixel_mean: float = 50.0                # 3DCE's mean on the 0..255 window (ImageNet stats if pretrained)
    pixel_std: float = 50.0
    fpn_channels: int = 256
    box_head_dim: int = 1024
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    anchor_scale: float = 1.0               # = 0.8 mm / data.target_spacing_mm for coarser presets
    anchor_octaves: tuple[float, ...] = (1.0,)   # sizes per level: size x each (e.g. 1, 1.41: two per octave)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_batch_size_per_image: int = 256
    rpn_fg_iou_thresh: float = 0.7          # anchors at least this IoU with a lesion are positives
    rpn_bg_iou_thresh: float = 0.3
    box_positive_fraction: float = 0.25     # share of positive RoIs sampled for the box head
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    box_batch_size_per_image: int = 512
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 50


@dataclass(frozen=True)
class TrainConfig:
    """SGD schedule of the paper (lr 0.02 at 16 images per batch, step decay)."""

    iterations: int = 36000
    optimizer: str = "sgd"                  # sgd (the paper) | adamw
    batch_size: int = 16                    # images per step, all ranks together
    base_lr: float = 0.02                   # at reference_batch_size; scaled linearly
    reference_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3
    lr_steps: tuple[float, ...] = (34000 / 36000, 36000 / 36000)   # fractions of iterations
    lr_gamma: float = 0.1
    grad_clip: float = 10.0
    amp: bool = True                        # mixed precision, CUDA only
    amp_dtype: str = "auto"                 # auto (bf16 where the GPU has it, else fp16) | bf16 | fp16
    channels_last: bool = True              # CUDA only
    accumulate: int = 1                     # split each rank's share of a step into this many passes (less memory)
    shape_buckets: bool = True              # one pass per padded image shape: no image sees another's padding
    cudnn_benchmark: bool = True            # CUDA: tune convolutions per input shape (shapes repeat)
    checkpoint_every: int = 1000
    eval_every: int = 2000                  # 0: evaluate only at the end
    log_every: int = 20
    seed: int = 0


@dataclass(frozen=True)
class PredictConfig:
    """Inference and test-time augmentation."""

    tta_scales: tuple[float, ...] = (0.8, 1.0, 1.2)
    merge: str = "wbf"                      # how TTA boxes are merged: wbf | nms
    merge_iou: float = 0.55
    batch_size: int = 8                     # images (views) per forward pass, all of one shape
    amp: bool = True                        # CUDA: bf16 where supported, else fp16


@dataclass(frozen=True)
class LabelConfig:
    """Algorithms 1 and 2 and the distillation baseline."""

    iou: float = 0.5                        # tau
    score: float = 0.9                      # alpha
    offsets: tuple[int, ...] = (-1, 1)
    keep: str = "best"
    distill_score: float = 0.9


@dataclass(frozen=True)
class PipelineConfig:
    """The paper's Section 4.3 workflow."""

    data: str | None = None                 # dataset root; None -> a synthetic dataset in RUN/data
    annotations: str | None = None          # default DATA/DL_info.csv
    truth: str | None = None                # default DATA/truth.csv when present
    label_tta: str = "flip+scales"          # TTA of the predictions the label tools use (paper: both)
    retrain_from: str = "scratch"           # scratch | baseline (paper: retrain, backbone from ImageNet init)
    retrain_iterations: int | None = None   # iterations of each retrain (None: train.iterations)
    retrain_base_lr: float | None = None    # base lr of each retrain (None: train.base_lr); lower to fine-tune
    parallel_trainings: int = 1             # retrains run side by side (CPU threads split between them)
    eval_3d_slices: int = 0                 # n > 0: also the 3D lens evaluation on test slices K-n..K+n; 0 = off
    variants: tuple[str, ...] = VARIANT_NAMES       # lesionprop.variants; baseline always runs
    rounds: int = 1                         # harvesting rounds: round r's teacher is round r-1's MM + LP model
    extra_label_sets: dict[str, str] = field(default_factory=dict)   # name -> a label file of your own (e.g. reviewed)
    synth_series: int = 100
    synth_seed: int = 0
    synth_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_plain(v) for v in x]
    return x


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Convert a YAML value to the dataclass field type ``tp`` (tuples, optionals)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except (TypeError, ValueError):
                continue
        raise ConfigError(f"config key {key}: cannot use {value!r}")
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(inner, v, key) for v in value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
        if not isinstance(value, (bool, int)) or value not in (0, 1):
            raise ConfigError(f"config key {key}: expected true/false, got {value!r}")
        return bool(value)
    if tp in (int, float, str):
        # YAML already typed the value: no str(None) == 'None', no bool as number, no NaN rate
        if isinstance(value, (bool, list, tuple, dict)) or value is None:
            raise ConfigError(f"config key {key}: expected {tp.__name__}, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"config key {key}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key {key}: expected an integer, got {value!r}")
        if tp is float and not math.isfinite(out):
            raise ConfigError(f"config key {key}: expected a finite number, got {value!r}")
        return out
    return value


def _build(cls: type, values: dict[str, Any] | None, prefix: str = "") -> Any:
    values = values or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config section {prefix or '<root>'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown config key(s) in {prefix or '<root>'}: {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def _deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("lesionprop.configs").iterdir() if p.name.endswith(".yaml"))


def _read_yaml(path: Path | Any, label: str) -> dict:
    import yaml                  # imported where used: ~12 ms of every command's start
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{label}: not a UTF-8 text file (byte at offset {exc.start})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping at the top level")
    if "preset" in data:
        base = _preset_dict(str(data.pop("preset")))
        data = _deep_merge(base, data)
    return data


def _preset_dict(name: str) -> dict:
    f = resources.files("lesionprop.configs") / f"{name}.yaml"
    if not f.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return _read_yaml(f, f"preset {name}")


def parse_override(text: str) -> tuple[list[str], Any]:
    import yaml                  # imported where used: ~12 ms of every command's start
    if "=" not in text:
        raise ConfigError(f"override must look like section.key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(path: str | Path | None = None, preset: str | None = None,
                overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """Build the config: defaults <- preset <- YAML file <- dotted overrides.

    ``overrides``: ``"section.key=value"`` strings (the value read as YAML, as ``--set`` does) or,
    from Python, a mapping of dotted keys to values: ``{"train.iterations": 200}``.
    """
    data: dict = {}
    if preset:
        data = _preset_dict(preset)
    if path:
        from lesionprop.fileio import require_file

        p = require_file(path, "config file")
        from_file = _read_yaml(p, str(p))
        try:
            _build(Config, from_file)              # name the file when its own keys are wrong
        except ValueError as exc:
            raise ConfigError(f"{p}: {exc}") from None
        data = _deep_merge(data, from_file)
    if isinstance(overrides, str):
        raise ConfigError(f"overrides must be a list of section.key=value strings or a mapping, got the string "
                         f"{overrides!r}")
    pairs = ([(str(k).split("."), v) for k, v in overrides.items()] if isinstance(overrides, Mapping)
             else [parse_override(ov) for ov in overrides])
    for keys, value in pairs:
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return _build(Config, data)


#: settings that never change a trained model: how fast data is loaded and how often the run
#: logs or saves.  A resumed training may change them, and the pipeline does not retrain for them.
RUN_ONLY_SETTINGS: dict[str, frozenset[str]] = {
    "data": frozenset({"num_workers", "cache_dir", "cache_mb"}),
    "train": frozenset({"log_every", "checkpoint_every", "cudnn_benchmark"}),
    "predict": frozenset({"batch_size"}),
}


def training_signature(cfg: Config) -> dict[str, Any]:
    """What a trained model depends on besides its data and its length: every ``data``, ``model``
    and ``train`` setting except :data:`RUN_ONLY_SETTINGS` and ``train.iterations``.

    The one definition both of ``train --resume`` (a checkpoint continues only under the same
    signature; ``train.iterations`` may grow) and of the pipeline's training fingerprints
    (which add the iterations).  Label, predict and pipeline settings are not part of it.
    """
    out: dict[str, Any] = {}
    for section in ("data", "model", "train"):
        skip = RUN_ONLY_SETTINGS.get(section, frozenset()) | ({"iterations"} if section == "train" else set())
        values = _to_plain(dataclasses.asdict(getattr(cfg, section)))
        out[section] = {k: v for k, v in values.items() if k not in skip}
    return out


#: settings that existed once and are ignored when a saved config (a checkpoint's) is rebuilt
REMOVED_SETTINGS: dict[str, frozenset[str]] = {"predict": frozenset({"tta"})}
#: what a saved config that predates a setting meant by its absence (not the setting's default)
ABSENT_MEANT: dict[str, dict[str, Any]] = {
    "data": {"sample_dtype": "float32"},
    "train": {"shape_buckets": False, "amp_dtype": "fp16"},
}


def config_from_dict(data: dict) -> Config:
    """Rebuild a Config saved with :meth:`Config.to_dict` (e.g. from a checkpoint); settings
    removed since (:data:`REMOVED_SETTINGS`) are dropped, settings added since take the value
    that reproduces the saved run (:data:`ABSENT_MEANT`)."""
    data = {k: ({kk: vv for kk, vv in v.items() if kk not in REMOVED_SETTINGS.get(k, ())}
                if isinstance(v, dict) else v) for k, v in data.items()}
    for section, meant in ABSENT_MEANT.items():
        if isinstance(data.get(section), dict):
            data[section] = {**meant, **data[section]}
    return _build(Config, data)


#: what a run may choose at inference for a trained model; everything else in ``data`` and
#: ``model`` is the model's own (it was trained with it)
INFERENCE_KEYS: tuple[str, ...] = ("predict",) + tuple(f"data.{k}" for k in sorted(RUN_ONLY_SETTINGS["data"]))


def inference_config(trained: Config, run: Config | None = None,
                     overrides: Sequence[str] | Mapping[str, Any] = ()) -> Config:
    """The config inference runs with: the trained model's, with :data:`INFERENCE_KEYS` taken from
    the run's config ``run`` (when given) and then from ``overrides`` (``predict.merge=nms``).

    The run decides TTA scales, merge, batch size, AMP, loader workers and caches, never the
    checkpoint; an override of another key is a :class:`ConfigError` (it is the model's).
    """
    data = trained.to_dict()
    if run is not None:
        plain = run.to_dict()
        data["predict"] = plain["predict"]
        data["data"].update({k: plain["data"][k] for k in RUN_ONLY_SETTINGS["data"]})
    pairs = ([(str(k).split("."), v) for k, v in overrides.items()] if isinstance(overrides, Mapping)
             else [parse_override(ov) for ov in overrides])
    for keys, value in pairs:
        dotted = ".".join(keys)
        if not any(dotted == k or dotted.startswith(k + ".") for k in INFERENCE_KEYS):
            raise ConfigError(f"--set {dotted}: at inference only {', '.join(k + ('.*' if '.' not in k else '') for k in INFERENCE_KEYS)} "
                              f"may change; {dotted} is the trained model's own setting")
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return _build(Config, data)


def save_config(cfg: Config, path: str | Path) -> None:
    import yaml                  # imported where used: ~12 ms of every command's start
    from lesionprop.fileio import atomic_write

    with atomic_write(path) as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
