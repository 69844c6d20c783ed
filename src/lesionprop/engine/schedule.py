"""Learning-rate schedule: linear warm-up, then step decay at fractions of the run (the paper's)."""

from __future__ import annotations

from bisect import bisect_right

from lesionprop.config import TrainConfig
from lesionprop.errors import InputError


def scaled_lr(cfg: TrainConfig) -> float:
    """The linear scaling rule: ``base_lr * batch_size / reference_batch_size``."""
    return cfg.base_lr * cfg.batch_size / cfg.reference_batch_size


OPTIMIZERS = ("sgd", "adamw")


def build_optimizer(cfg: TrainConfig, params: list) -> "torch.optim.Optimizer":
    """SGD with momentum (the paper) or AdamW, at the scaled learning rate."""
    import torch

    lr = scaled_lr(cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    raise InputError(f"train.optimizer must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}")


def milestones(cfg: TrainConfig) -> list[int]:
    """Iterations after which the lr is multiplied by ``lr_gamma``."""
    return sorted(round(f * cfg.iterations) for f in cfg.lr_steps)


class WarmupStepSchedule:
    """``factor(it)`` for ``torch.optim.lr_scheduler.LambdaLR`` (a class, so its state is saved)."""

    def __init__(self, warmup_iters: int, warmup_factor: float, steps: list[int], gamma: float) -> None:
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.steps = list(steps)
        self.gamma = gamma

    def __call__(self, it: int) -> float:
        factor = self.gamma ** bisect_right(self.steps, it)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            factor *= self.warmup_factor * (1 - alpha) + alpha
        return factor


def build_schedule(cfg: TrainConfig) -> WarmupStepSchedule:
    return WarmupStepSchedule(cfg.warmup_iters, cfg.warmup_factor, milestones(cfg), cfg.lr_gamma)
