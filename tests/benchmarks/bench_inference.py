"""Benchmark: in-process CPU inference of the disaggregation models, windows and whole series.

    .venv/bin/python -m tests.benchmarks.bench_inference [--threads 1 2] [--seconds 0.5] [--appliances 4]

Windows per second of ``model(x)`` under ``torch.inference_mode()`` at batch 1, 32 and 256 (seq2point and
multitask at their 599-reading window, causal at 512), the parameter counts, and the readings per second of
``ModelBundle.predict_series`` on 4 h of 5 s readings (the evaluation path; causal: forward_sequence).
Prints figures and machine_info(); not a test. Untrained weights: speed does not depend on them.

    python -m tests.benchmarks.bench_inference --device cuda [--reps 30]

on a GPU machine instead measures bf16-autocast training steps (forward, backward, AdamW) and inference,
in windows per second at batch 1024, the figure the "train on REDD in under 60 s" target depends on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from airwatt.appliances import APPLIANCES
from airwatt.models import (
    GapPolicy,
    ModelBundle,
    ModelSpec,
    NormStats,
    OnOffSpec,
    build_model,
    default_target,
)
from airwatt.models.decision import decision_spec
from tests.benchmarks.machine import machine_info, parse_args

REPO = Path(__file__).resolve().parents[2]

MODELS = (("seq2point", 599), ("multitask", 599), ("causal", 512))
BATCHES = (1, 32, 256)
APPLIANCE_NAMES = [
    "fridge",
    "microwave",
    "dishwasher",
    "washing_machine",
    "kettle",
    "tv",
    "lighting",
    "fan",
    "freezer",
    "air_conditioner",
    "water_heater",
    "rice_cooker",
    "coffee_machine",
]
DECISION = {"on_prob": 0.5, "off_prob": 0.3, "confirm_on_s": 10, "confirm_off_s": 20}  # a typical tuned rule


def bundle_for(
    arch: str, window_length: int, n_appliances: int, arch_kwargs: dict[str, Any] | None = None
) -> ModelBundle:
    """An untrained bundle of ``arch`` (its constructor's defaults unless ``arch_kwargs``); a real-time one
    with a typical decision rule and params.yaml's decision memory (its served history)."""
    from airwatt.config import load_params

    apps = APPLIANCE_NAMES[:n_appliances]
    memory_s = load_params(REPO / "params.yaml").train.decision.memory_s
    real_time = default_target(arch) == "last"
    spec = ModelSpec(
        arch=arch,
        arch_kwargs=arch_kwargs or {},
        appliances=apps,
        window_length=window_length,
        target=default_target(arch),
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=400,
            aggregate_std_w=600,
            power_mean_w=dict.fromkeys(apps, 30.0),
            power_std_w=dict.fromkeys(apps, 150.0),
        ),
        on_off={a: OnOffSpec.of(APPLIANCES[a]) for a in apps},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
        decision=decision_spec(memory_s, dict.fromkeys(apps, DECISION)) if real_time else None,
    )
    torch.manual_seed(0)
    return ModelBundle(spec, build_model(spec))


def windows_per_second(model: torch.nn.Module, batch: int, window_length: int, seconds: float) -> float:
    """Best-of-three rate, each round repeating the call for about seconds / 3."""
    x = torch.randn(batch, window_length)
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        t = time.perf_counter()
        model(x)
        per_call = max(time.perf_counter() - t, 1e-6)
        reps = max(1, int(seconds / 3 / per_call))
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                model(x)
            best = min(best, (time.perf_counter() - t) / reps)
    return batch / best


def series_readings_per_second(bundle: ModelBundle, readings: int) -> float:
    rng = np.random.default_rng(0)
    agg = 300 + 100 * (np.arange(readings) % 720 < 240) + rng.normal(0, 10, readings)
    bundle.predict_series(agg[:256])  # warm-up
    t = time.perf_counter()
    bundle.predict_series(agg)
    return readings / (time.perf_counter() - t)


def autocast_windows_per_second(
    model: torch.nn.Module, window_length: int, train: bool, device: str, reps: int, batch: int = 1024
) -> float:
    """bf16-autocast windows/s: a training step (forward, loss, backward, AdamW) or inference."""
    model = model.to(device).train(train)
    x = torch.randn(batch, window_length, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3) if train and params else None

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16), torch.set_grad_enabled(opt is not None):
            out = model(x)
            if opt is not None:
                loss = out.power.float().square().mean()
                if out.on_logits is not None:
                    loss = loss + out.on_logits.float().sigmoid().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        step()
    sync()
    return reps * batch / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=0.5, help="measuring time per figure")
    ap.add_argument("--appliances", type=int, default=4)
    ap.add_argument("--series-readings", type=int, default=2880, help="4 h of 5 s readings")
    ap.add_argument("--device", help="e.g. cuda: bf16 training/inference throughput on it instead")
    ap.add_argument("--reps", type=int, default=30, help="timed steps per figure with --device")
    args = parse_args(ap, {"threads": [1], "seconds": 0.1, "series_readings": 720, "reps": 5})
    print(machine_info())
    print(f"torch {torch.__version__}, {args.appliances} appliances, untrained weights\n")
    from airwatt.config import load_params

    arch_kwargs = load_params(REPO / "params.yaml").train.arch  # the configured sizes
    bundles = {arch: bundle_for(arch, w, args.appliances, arch_kwargs.get(arch)) for arch, w in MODELS}
    for arch, b in bundles.items():
        n = sum(p.numel() for p in b.model.parameters())
        print(f"{arch:<10} window {b.window_length:>4}  parameters {n:>12,}")
    if args.device:
        name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
        print(f"\n{name}, bf16 autocast, batch 1024: windows/s")
        for arch, b in bundles.items():
            train = autocast_windows_per_second(b.model, b.window_length, True, args.device, args.reps)
            infer = autocast_windows_per_second(b.model, b.window_length, False, args.device, args.reps)
            print(f"{arch:<10} train step {train:>12,.0f}   inference {infer:>12,.0f}")
        return
    header = "".join(f"{'batch ' + str(s):>13}" for s in BATCHES)
    for threads in args.threads:
        torch.set_num_threads(threads)
        print(f"\nwindows/s, {threads} thread(s)   {header}   series readings/s (predict_series)")
        for arch, b in bundles.items():
            rates = [windows_per_second(b.model, s, b.window_length, args.seconds) for s in BATCHES]
            series = series_readings_per_second(b, args.series_readings)
            cells = "".join(f"{r:>13,.0f}" for r in rates)
            print(f"{arch:<22}{cells}   {series:>13,.0f}")


if __name__ == "__main__":
    main()
