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
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lesionprop.config import Config, config_from_dict, save_config, training_signature
from lesionprop.annotations import Split, read_annotations, series_geometry
from lesionprop.data.dataset import DetectionDataset, collate, items_from_boxes, worker_context, worker_init_fn
from lesionprop.engine import distributed
from lesionprop.engine.batches import EpochIndexed, GlobalBatchSampler, to_device
from lesionprop.engine.metrics_log import MetricsLog
from lesionprop.engine.checkpoint import (load_checkpoint, rng_state, save_checkpoint, seed_everything,
                                          set_rng_state)
from lesionprop.engine.schedule import build_optimizer, build_schedule
from lesionprop.engine.validate import Validator
from lesionprop.errors import InputError, LesionpropError, MissingInputError
from lesionprop.model.detector import build_detector


class NonFiniteLossError(LesionpropError, FloatingPointError):
    """The loss became NaN or infinite: training stops (lower the lr or check the data)."""


@dataclass
class TrainResult:
    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    iterations: int
    final_loss: float
    best_sensitivity: float | None
    metrics: list[dict[str, Any]] = field(default_factory=list)


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
    items = items_from_boxes(train_rows.file_name, train_rows.boxes)
    dataset = DetectionDataset(data_root, items, cfg.data, geometry=geometry,
                               train=True, seed=tc.seed)
    validator = Validator(cfg, data_root, lesions, geometry, dist)

    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
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
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(tc, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, build_schedule(tc))
    scaler = torch.amp.GradScaler("cuda", enabled=cuda and tc.amp)
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
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    ddp = DistributedDataParallel(model, device_ids=[dist.device] if cuda else None) if dist.world > 1 else model

    sampler = GlobalBatchSampler(len(dataset), tc.batch_size, tc.seed, start, tc.iterations, dist.rank, dist.world)
    loader = DataLoader(EpochIndexed(dataset), batch_sampler=sampler, collate_fn=collate,
                        num_workers=cfg.data.num_workers, worker_init_fn=worker_init_fn,
                        multiprocessing_context=worker_context(cfg.data.num_workers),
                        generator=torch.Generator(), pin_memory=cuda)
    log = MetricsLog(run_dir / "metrics.jsonl", start if resume else None, dist.main)
    bar = tqdm(total=tc.iterations, initial=start, desc="train", disable=not (progress and dist.main),
               dynamic_ncols=True)
    model.train()
    it, loss_value, t0 = start, float("nan"), time.perf_counter()
    for images, targets, _ in loader:
        images, targets = to_device(images, targets, dist.device)
        with torch.autocast("cuda", enabled=cuda and tc.amp):
            losses = ddp(images, targets)
        loss = sum(losses.values())
        # reduced over ranks before backward, so every rank stops together on a bad loss
        logged = distributed.mean_across_ranks(torch.stack([loss.detach(), *[v.detach() for v in losses.values()]]))
        if not torch.isfinite(logged).all():
            raise NonFiniteLossError(f"non-finite loss at iteration {it + 1}: "
                                     f"{dict(zip(losses, logged[1:].tolist()))}; lower train.base_lr?")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        it += 1
        loss_value = float(logged[0])
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}")
        bar.update(1)
        if it % tc.log_every == 0 or it == tc.iterations or it == stop_after:
            log.write({"iteration": it, "loss": loss_value,
                       **{k: float(v) for k, v in zip(losses, logged[1:])},
                       "grad_norm": float(grad_norm), "lr": optimizer.param_groups[0]["lr"],
                       "seconds": round(time.perf_counter() - t0, 3)})
        final = it == tc.iterations or it == stop_after
        evaluate = (tc.eval_every and it % tc.eval_every == 0) or it == tc.iterations
        improved = False
        if evaluate and validator.has_lesions:
            sens = validator(model)
            improved = best is None or sens > best
            best = sens if improved else best
            log.write({"iteration": it, "val_sensitivity_4fp": sens, "best": best})
            if dist.main:
                bar.write(f"iteration {it}: validation sensitivity at 4 FPs/image = {sens:.4f} (best {best:.4f})")
            model.train()
        if final or improved or it % tc.checkpoint_every == 0:
            state = {"config": cfg.to_dict(), "num_slices": cfg.data.num_slices, "iteration": it,
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                     "best_sensitivity": best, "rng": distributed.all_gather_objects(rng_state())}
            if dist.main:
                # best.pt before last.pt: a killed run whose last.pt is final never lacks its best.pt
                if improved or (final and it == tc.iterations and not validator.has_lesions):
                    save_checkpoint(state, best_path)
                save_checkpoint(state, last_path)
        if final:
            break
    bar.close()
    if dist.main and it == tc.iterations and not validator.has_lesions:
        msg = ("the val split has no lesions: best.pt is the LAST checkpoint "
               f"(iteration {it}), not chosen by validation")
        if not any(r.get("note") == msg for r in log.records):     # a resumed finished run has it once
            log.write({"iteration": it, "note": msg})
        print(f"lesionprop train: {msg}")
    distributed.barrier()
    if it == start and start >= tc.iterations:
        if not best_path.is_file():
            raise InputError(f"{run_dir}: finished at iteration {it} but best.pt is missing "
                             "(validation never improved on the stored best?)")
        if dist.main:
            print(f"lesionprop train: {run_dir} is already finished (iteration {it} of {tc.iterations}); "
                  "raise train.iterations to train on")
    elif math.isnan(loss_value) and it == start:
        raise InputError(f"nothing to train: the run is already at iteration {it} of {tc.iterations}")
    return TrainResult(run_dir, last_path, best_path if best_path.exists() else last_path, it, loss_value,
                       best, log.records)
