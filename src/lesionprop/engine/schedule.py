"""Learning-rate schedule: linear warm-up, then step decay at fractions of the run (the paper's)."""

from __future__ import annotations

from bisect import bisect_right

from lesionprop.config import TrainConfig


def scaled_lr(cfg: TrainConfig) -> float:
    """The linear scaling rule: ``base_lr * batch_size / reference_batch_size``."""
    return cfg.base_lr * cfg.batch_size / cfg.reference_batch_size


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
