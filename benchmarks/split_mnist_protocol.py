"""Time of the Split-MNIST VCL paper protocol, and the floor its matrix products set.

The protocol (``+experiment=vcl_split_mnist``) trains 5 tasks x 120 full-batch epochs of a
784-256-256 mean-field network with K = 10 samples per step. Each step's matrix products
are fixed by local reparameterisation: the input layer's mean and variance products once per
batch, the later layers' K times, forward and backward. This script

1. counts those multiply-adds for the real task sizes,
2. times the same products (``torch.mm`` on the same shapes) on this machine: the fastest
   the protocol's training could possibly run, before any other work,
3. times real full-batch training steps through the suite on task 1, and extrapolates to
   the 600 training steps (without the task-1 maximum-likelihood start and evaluation,
   which a record's wall time includes),

and prints them against the 12-minute target.

    python benchmarks/split_mnist_protocol.py [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.errors import exit_on_user_error
from cl_bayes.run import resolve_device
from cl_bayes.scenario import Scenario

TARGET_S = 12 * 60


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _best_seconds(fn, device: torch.device, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return best


def step_products(n: int, k: int, widths: list[int], device: torch.device) -> tuple[int, float]:
    """Multiply-adds of one training step on ``n`` examples, and the seconds they take.

    Input layer: mean and variance products once (forward), their weight gradients
    (backward; no input gradient). Each later layer, K times: mean and variance forward,
    and for each of the two, the input gradient and the weight gradient.
    """
    macs, seconds = 0, 0.0
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        rows = n if index == 0 else k * n
        a = torch.rand(rows, fan_in, device=device)
        w = torch.rand(fan_in, fan_out, device=device)
        g = torch.rand(rows, fan_out, device=device)
        products = [(a, w), (a.T, g)]  # forward, weight gradient
        if index > 0:
            products.append((g, w.T))  # input gradient
        for left, right in products:
            # Each product is done twice: once for the means, once for the variances.
            seconds += 2 * _best_seconds(partial(torch.mm, left, right), device)
            macs += 2 * rows * fan_in * fan_out
    return macs, seconds


def suite_step_seconds(steps: int, device: torch.device, root: str):
    """Seconds of one full-batch K = 10 VCL step through the suite, on task 1."""
    overrides = ["+experiment=vcl_split_mnist", f"device={device}", "progress=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    sizes = [len(Scenario.TASK.labelled(sequence, t, "train")) for t in range(sequence.n_tasks)]
    data = Scenario.TASK.labelled(sequence, 0, "train")
    torch.manual_seed(0)
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=[2] * sequence.n_tasks)
    model = model.to(device)
    method = instantiate(cfg.method, ml_init=False)
    method.before_task(model, 0, data)
    optimizer = instantiate(cfg.optimizer)(model.parameters())

    def step():
        optimizer.zero_grad(set_to_none=True)
        method.loss(model, data).backward()
        optimizer.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        _sync(device)
        started = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - started)
    return min(times), sizes, cfg


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=_at_least_one, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    keep_freed_memory()
    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))
    device = resolve_device(args.device)

    step_s, sizes, cfg = suite_step_seconds(args.steps, device, root)
    if cfg.model.sampling != "local":
        raise SystemExit(
            "the product count assumes local reparameterisation (model.sampling=local)"
        )
    epochs, k = cfg.train.epochs, cfg.method.train_samples
    widths = [784] + list(cfg.model.hidden_sizes) + [2]
    macs, floor_s = 0, 0.0
    for n in sizes:
        task_macs, task_s = step_products(n, k, widths, device)
        macs, floor_s = macs + epochs * task_macs, floor_s + epochs * task_s
    steps = epochs * len(sizes)
    estimate_s = step_s * sum(sizes) / sizes[0] * epochs
    print(f"Split-MNIST VCL protocol: {len(sizes)} tasks ({', '.join(map(str, sizes))} examples),")
    print(f"{epochs} full-batch epochs, K = {k}, {'-'.join(map(str, widths))}: {steps} steps")
    print(f"threads                          : {torch.get_num_threads()}")
    print(f"matrix products                  : {macs / 1e12:.1f} T multiply-adds")
    print(f"those products alone (torch.mm)  : {floor_s:.0f} s ({floor_s / 60:.1f} min)")
    print(f"  = {2 * macs / floor_s / 1e9:.0f} GFLOP/s")
    print(f"suite step on task 1             : {step_s:.3f} s (best of {args.steps})")
    print(f"training, extrapolated           : {estimate_s:.0f} s ({estimate_s / 60:.1f} min)")
    print(f"target                           : {TARGET_S} s (12.0 min)")


if __name__ == "__main__":
    exit_on_user_error(main)
