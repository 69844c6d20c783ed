"""Speed of the FPN-3DCE presets: training iterations/s, inference images/s, M=3 vs M=1 step time, peak memory.

    python benchmarks/bench_model.py                       # CPU: tiny, cpu, resnet18, resnet50
    python benchmarks/bench_model.py --device cuda --presets resnet50 resnet18 cpu

Inputs are random 0..255 images of each preset's size (``data.max_size`` square,
the size a 512 x 512 slice at 0.8 mm has after the preset's rescale) with two
boxes each: the cost of a step does not depend on the pixel values because
every per-image count (anchors, RPN samples, proposals, RoIs) is fixed by the
config.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import resource
import time

import torch

from lesionprop.config import load_config
from lesionprop.model.detector import build_detector, count_parameters


def _inputs(n: int, channels: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(channels, size, size, generator=g) * 255).to(device) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[size * 0.2, size * 0.3, size * 0.35, size * 0.42],
                                       [size * 0.6, size * 0.5, size * 0.7, size * 0.66]], device=device),
                "labels": torch.ones(2, dtype=torch.int64, device=device)} for _ in range(n)]
    return images, targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_train(cfg, num_slices: int, size: int, batch: int, steps: int, device: torch.device) -> float:
    """Seconds per SGD step (median of ``steps`` after one warm-up step)."""
    torch.manual_seed(0)
    model = build_detector(cfg.model, num_slices, load_pretrained=False).to(device).train()
    amp = device.type == "cuda" and cfg.train.amp
    if device.type == "cuda" and cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    images, targets = _inputs(batch, num_slices, size, device)
    times = []
    for i in range(steps + 1):
        _sync(device)
        t = time.perf_counter()
        with torch.autocast("cuda", enabled=amp):
            loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        _sync(device)
        if i:
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def time_infer(cfg, num_slices: int, size: int, batch: int, steps: int, device: torch.device) -> float:
    """Images per second of eval-mode forward passes."""
    model = build_detector(cfg.model, num_slices, load_pretrained=False).to(device).eval()
    images, _ = _inputs(batch, num_slices, size, device)
    amp = device.type == "cuda" and cfg.train.amp
    with torch.autocast("cuda", enabled=amp):
        model(images)
        _sync(device)
        t = time.perf_counter()
        for _ in range(steps):
            model(images)
        _sync(device)
    return batch * steps / (time.perf_counter() - t)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # process peak RSS (Linux: KiB)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "cpu", "resnet18", "resnet50"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=None, help="images per step (default: the preset's batch, max 4)")
    args = ap.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}, " \
        f"{torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}\n")
    print("| preset | M | input | batch | params (M) | train s/step | train it/s | infer img/s | "
          "3DCE/plain step | peak MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        cfg = load_config(preset=preset)
        size, ns = cfg.data.max_size, cfg.data.num_slices
        batch = args.batch or min(cfg.train.batch_size, 4)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step = time_train(cfg, ns, size, batch, args.steps, device)
        ips = time_infer(cfg, ns, size, batch, args.steps, device)
        plain = time_train(cfg, 3, size, batch, args.steps, device) if ns > 3 else step
        params = count_parameters(build_detector(cfg.model, ns, load_pretrained=False))[0] / 1e6
        print(f"| {preset} | {ns // 3} | {ns}x{size}x{size} | {batch} | {params:.1f} | {step:.3f} | "
              f"{1 / step:.2f} | {ips:.1f} | {step / plain:.2f} | {peak_memory_mb(device):.0f} |", flush=True)


if __name__ == "__main__":
    main()
