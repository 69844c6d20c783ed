"""Training loop of the FPN-3DCE detector (single process or ``torchrun``).

Run it as::

    lesionprop train --data DIR --annotations CSV --out RUN --preset cpu
    torchrun --nproc_per_node 8 -m lesionprop train --data DIR --annotations CSV --out RUN
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 --nproc_per_node 8 \\
        -m lesionprop train ...

Every row of the train split (key or adjacent slice, human or pseudo-label) makes
its slice a training image with all that slice's boxes (pixel frame of the
stored slice -> sample frame in the dataset).  The run directory holds
``config.yaml``, ``metrics.jsonl``, ``last.pt`` (every ``checkpoint_every``
iterations, atomically) and ``best.pt`` (best validation sensitivity at 4 FPs
per image on the val split's key slices).  ``resume=True`` continues from
``last.pt`` exactly: weights, optimiser, scheduler, scaler, RNG and data order.

One step: each rank's share of ``train.batch_size`` images is split into passes
(:func:`micro_batches`): one per padded image shape (``train.shape_buckets``: no image
sees another's padding, as at inference) and at most ``batch / train.accumulate`` images
each; their losses are weighted by their share of the images, so the gradient is the one of
the whole batch.  Mixed precision (``train.amp``) uses bf16 where the GPU has it (no loss
scaling), else fp16 with a gradient scaler.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from lesionprop.annotations import Split, read_annotations, series_geometry
from lesionprop.config import Config, config_from_dict, save_config, training_signature
from lesionprop.data.dataset import DetectionDataset, collate, items_from_boxes
from lesionprop.engine import distributed
from lesionprop.engine.batches import EpochIndexed, GlobalBatchSampler, to_device
from lesionprop.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from lesionprop.engine.loader import amp_dtype, make_loader, resolve_workers
from lesionprop.engine.meter import ThroughputMeter
from lesionprop.engine.metrics_log import MetricsLog
from lesionprop.engine.predict import padded_shape
from lesionprop.engine.schedule import build_optimizer, build_schedule
from lesionprop.engine.validate import Validator
from lesionprop.errors import InputError, LesionpropError, MissingInputError
from lesionprop.model.detector import build_detector

#: the detector pads every image to a multiple of this (KeepSizeTransform's size_divisible)
PAD_TO = 32


class NonFiniteLossError(LesionpropError, FloatingPointError):
    """The loss became NaN or infinite: training stops (lower the lr or check the data)."""


class OutOfMemory(LesionpropError):
    """A training step did not fit in the GPU's memory: one line naming what to lower."""


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    iterations: int
    final_loss: float
    best_sensitivity: float | None
    metrics: list[dict[str, Any]] = field(default_factory=list)


def micro_batches(shapes: list[tuple[int, ...]], accumulate: int = 1, by_shape: bool = True,
                  pad_to: int = PAD_TO) -> list[list[int]]:
    """The passes of one step: indices into ``shapes`` (each image's ``(..., H, W)``).

    ``by_shape``: one group per padded shape (H and W rounded up to ``pad_to``), in order of
    first appearance; then each group cut into pieces of at most ``ceil(n / accumulate)``.
    """
    if accumulate < 1:
        raise InputError(f"train.accumulate must be >= 1, got {accumulate}")
    groups: dict[Any, list[int]] = {}
    for i, s in enumerate(shapes):
        key = padded_shape(s, pad_to) if by_shape else None
        groups.setdefault(key, []).append(i)
    most = max(1, math.ceil(len(shapes) / accumulate))
    return [g[i:i + most] for g in groups.values() for i in range(0, len(g), most)]


def _check_resume_config(cfg: Config, saved: dict[str, Any], path: Path) -> None:
    """Resume only under the same :func:`~lesionprop.config.training_signature` (the pipeline's
    training fingerprints use the same function, so they agree on when a run may continue)."""
    now = training_signature(cfg)
    then = training_signature(config_from_dict(saved))
    diff = [f"{s}.{k}" for s in now for k in now[s] if then[s].get(k) != now[s][k]]
    if diff:
        raise InputError(f"--resume: the config differs from the one in {path} at {', '.join(diff[:6])} "
                         "(a resumed run may change train.iterations and the logging, checkpoint and "
                         "data-loading settings only)")


@dataclass
class _Run:
    """Everything one training holds between steps."""

    cfg: Config
    dist: distributed.DistInfo
    model: torch.nn.Module
    ddp: torch.nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None
    start: int
    best: float | None


def _build(cfg: Config, dist: distributed.DistInfo, run_dir: Path, resume: bool,
           init_checkpoint: str | Path | None) -> _Run:
    """Model, optimiser and schedule on the device; from ``last.pt`` when resuming."""
    tc = cfg.train
    last_path = run_dir / "last.pt"
    if not resume and last_path.exists():
        raise InputError(f"{run_dir} already holds a run (last.pt): use --resume or another --out")
    seed_everything(tc.seed)
    model = build_detector(cfg.model, cfg.data.num_slices)
    if init_checkpoint is not None:
        model.load_state_dict(load_checkpoint(init_checkpoint)["model"])
    cuda = dist.device.type == "cuda"
    model.to(dist.device)
    if cuda and tc.channels_last:
        model.to(memory_format=torch.channels_last)
        model.backbone.channels_last = True
    if cuda:
        torch.backends.cudnn.benchmark = bool(tc.cudnn_benchmark)
    amp = amp_dtype(dist.device, tc.amp_dtype) if cuda and tc.amp else None
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(tc, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_schedule(tc))
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    start, best = 0, None
    if resume:
        if not last_path.is_file():
            raise MissingInputError(f"--resume: no checkpoint {last_path}")
        state = load_checkpoint(last_path)
        _check_resume_config(cfg, state["config"], last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.lr_lambdas[0] = build_schedule(tc)    # train.iterations may have changed
        scaler.load_state_dict(state["scaler"])
        start, best = state["iteration"], state.get("best_sensitivity")
        set_rng_state(state["rng"][min(dist.rank, len(state["rng"]) - 1)])
    else:
        torch.manual_seed(tc.seed + dist.rank)   # RoI / anchor sampling differs per rank
    ddp = DistributedDataParallel(model, device_ids=[dist.device] if cuda else None) if dist.world > 1 else model
    return _Run(cfg, dist, model, ddp, params, optimizer, scheduler, scaler, amp, start, best)


def _step(r: _Run, images: list[torch.Tensor], targets: list[dict], it: int) -> tuple[torch.Tensor, dict, float]:
    """One optimiser step over this rank's images: ``(logged losses, loss names..., grad norm)``."""
    tc = r.cfg.train
    passes = micro_batches([tuple(im.shape) for im in images], tc.accumulate, tc.shape_buckets)
    r.optimizer.zero_grad(set_to_none=True)
    total: dict[str, torch.Tensor] = {}
    n = len(images)
    try:
        for k, idx in enumerate(passes):
            sync = k == len(passes) - 1 or not isinstance(r.ddp, DistributedDataParallel)
            with (nullcontext() if sync else r.ddp.no_sync()):
                with torch.autocast(r.dist.device.type, dtype=r.amp or torch.float32, enabled=r.amp is not None):
                    losses = r.ddp([images[i] for i in idx], [targets[i] for i in idx])
                w = len(idx) / n
                loss = sum(losses.values()) * w
                r.scaler.scale(loss).backward()
            for name, v in losses.items():
                total[name] = total.get(name, 0.0) + v.detach().float() * w
    except torch.cuda.OutOfMemoryError:
        h = max(im.shape[-2] for im in images)
        w_ = max(im.shape[-1] for im in images)
        raise OutOfMemory(
            f"CUDA out of memory at iteration {it + 1}: {n} images per rank (train.batch_size="
            f"{tc.batch_size} over {r.dist.world} rank(s)), up to {h} x {w_} px, in {len(passes)} pass(es). "
            f"Lower it with train.accumulate={tc.accumulate * 2} (same result, half the images per pass), "
            f"train.amp=true, a smaller data.max_size ({r.cfg.data.max_size}), or smaller "
            f"model.rpn_batch_size_per_image / model.box_batch_size_per_image") from None
    loss_sum = sum(total.values())
    # reduced over ranks before the step, so every rank stops together on a bad loss
    logged = distributed.mean_across_ranks(torch.stack([loss_sum, *total.values()]))
    if not torch.isfinite(logged).all():
        raise NonFiniteLossError(f"non-finite loss at iteration {it + 1}: "
                                 f"{dict(zip(total, logged[1:].tolist()))}; lower train.base_lr?")
    r.scaler.unscale_(r.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(r.params, tc.grad_clip)
    r.scaler.step(r.optimizer)
    r.scaler.update()
    r.scheduler.step()
    return logged, dict(zip(total, logged[1:].tolist())), float(grad_norm)


def _save(r: _Run, it: int, run_dir: Path, best_too: bool) -> None:
    state = {"config": r.cfg.to_dict(), "num_slices": r.cfg.data.num_slices, "iteration": it,
             "model": r.model.state_dict(), "optimizer": r.optimizer.state_dict(),
             "scheduler": r.scheduler.state_dict(), "scaler": r.scaler.state_dict(),
             "best_sensitivity": r.best, "rng": distributed.all_gather_objects(rng_state())}
    if r.dist.main:
        # best.pt before last.pt: a killed run whose last.pt is final never lacks its best.pt
        if best_too:
            save_checkpoint(state, run_dir / "best.pt")
        save_checkpoint(state, run_dir / "last.pt")


def train(cfg: Config, data_root: str | Path, annotations_path: str | Path, run_dir: str | Path, *,
          resume: bool = False, init_checkpoint: str | Path | None = None, stop_after: int | None = None,
          device: str | None = None, progress: bool = True) -> TrainResult:
    """Train ``cfg``'s detector; see the module docstring.

    ``init_checkpoint``: start from these model weights (not optimiser or position).
    ``stop_after``: stop after this iteration as if killed (``last.pt`` written), e.g. to resume later.
    """
    dist = distributed.setup(device)
    tc, run_dir = cfg.train, Path(run_dir)
    lesions = read_annotations(annotations_path)
    train_rows = lesions.select(Split.TRAIN, sources=None, drop_noisy=False)
    if not len(train_rows):
        raise InputError(f"{annotations_path}: no rows with Train_Val_Test = 1 (train split)")
    geometry = series_geometry(data_root, lesions)
    dataset = DetectionDataset(data_root, items_from_boxes(train_rows.file_name, train_rows.boxes), cfg.data,
                               geometry=geometry, train=True, seed=tc.seed)
    validator = Validator(cfg, data_root, lesions, geometry, dist)
    r = _build(cfg, dist, run_dir, resume, init_checkpoint)
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    sampler = GlobalBatchSampler(len(dataset), tc.batch_size, tc.seed, r.start, tc.iterations, dist.rank, dist.world)
    loader = make_loader(EpochIndexed(dataset), workers=resolve_workers(cfg.data.num_workers, dist.device),
                         device=dist.device, collate_fn=collate, batch_sampler=sampler, generator=torch.Generator())
    log = MetricsLog(run_dir / "metrics.jsonl", r.start if resume else None, dist.main)
    bar = tqdm(total=tc.iterations, initial=r.start, desc="train", disable=not (progress and dist.main),
               dynamic_ncols=True)
    try:
        r.model.train()
        it, loss_value, meter = r.start, float("nan"), ThroughputMeter(dist.device)
        for images, targets, _ in loader:
            meter.waited()
            images, targets = to_device(images, targets, dist.device)
            logged, parts, grad_norm = _step(r, images, targets, it)
            meter.stepped(len(images))
            it += 1
            loss_value = float(logged[0])
            bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{r.optimizer.param_groups[0]['lr']:.4f}")
            bar.update(1)
            final = it == tc.iterations or it == stop_after
            if it % tc.log_every == 0 or final:
                log.write({"iteration": it, "loss": loss_value, **parts, "grad_norm": grad_norm,
                           "lr": r.optimizer.param_groups[0]["lr"], **meter.window(), "ranks": dist.world})
            improved = False
            if ((tc.eval_every and it % tc.eval_every == 0) or it == tc.iterations) and validator.has_lesions:
                sens = validator(r.model)
                improved = r.best is None or sens > r.best
                r.best = sens if improved else r.best
                log.write({"iteration": it, "val_sensitivity_4fp": sens, "best": r.best})
                if dist.main:
                    bar.write(f"iteration {it}: validation sensitivity at 4 FPs/image = {sens:.4f} (best {r.best:.4f})")
                r.model.train()
            if final or improved or it % tc.checkpoint_every == 0:
                _save(r, it, run_dir, improved or (final and it == tc.iterations and not validator.has_lesions))
            meter.exclude()
            if final:
                break
    finally:
        bar.close()         # before any error's line, not in the middle of the bar's
    _finish_notes(r, it, run_dir, log, validator.has_lesions, loss_value)
    best_path, last_path = run_dir / "best.pt", run_dir / "last.pt"
    return TrainResult(run_dir, last_path, best_path if best_path.exists() else last_path, it, loss_value,
                       r.best, log.records)


def _finish_notes(r: _Run, it: int, run_dir: Path, log: MetricsLog, has_val: bool, loss_value: float) -> None:
    """What a finished (or already finished) run tells its user."""
    tc, dist = r.cfg.train, r.dist
    if dist.main and it == tc.iterations and not has_val:
        msg = ("the val split has no lesions: best.pt is the LAST checkpoint "
               f"(iteration {it}), not chosen by validation")
        if not any(rec.get("note") == msg for rec in log.records):     # a resumed finished run has it once
            log.write({"iteration": it, "note": msg})
        print(f"lesionprop train: {msg}")
    distributed.barrier()
    if it == r.start and r.start >= tc.iterations:
        if not (run_dir / "best.pt").is_file():
            raise InputError(f"{run_dir}: finished at iteration {it} but best.pt is missing "
                             "(validation never improved on the stored best?)")
        if dist.main:
            print(f"lesionprop train: {run_dir} is already finished (iteration {it} of {tc.iterations}); "
                  "raise train.iterations to train on")
    elif math.isnan(loss_value) and it == r.start:
        raise InputError(f"nothing to train: the run is already at iteration {it} of {tc.iterations}")
