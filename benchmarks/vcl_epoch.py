"""Cost of one VCL training epoch (K = 1 and K = 10 samples) against a deterministic epoch.

All three train a 784-256-256 network with a 2-unit head on the first Split-MNIST task
(digits 0/1, ~12.7k examples), batch 128, Adam lr 1e-3, through the suite's training loop:
``finetune`` on the deterministic MLP, and ``vcl`` on the mean-field Bayesian MLP with local
reparameterisation. The three epochs run in turns; prints the median epoch time of each
and the ratios (targets: K = 1 <= 2.5x, K = 10 <= 9x), plus the peak resident memory.
``--phases`` adds, for each, where one epoch's time goes: drawing the batches, the loss
(forward pass and, for VCL, the KL), the backward pass and the optimiser step, and the
KL's own share.

    python benchmarks/vcl_epoch.py [--repeats 5] [--device cpu] [--phases]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.config import CONF_DIR, register_task_sequences
from cl_bayes.run import resolve_device
from cl_bayes.scenario import Scenario
from cl_bayes.training import fit

PHASES = ("batches", "loss", "backward", "optimizer step", "rest")
KL = "of which KL"  # forward and backward of the KL alone, as many times as the epoch's steps


def setup(method_name: str, samples: int, device: str, root: str):
    """The config, device and task-1 training data of one of the three measured epochs."""
    overrides = [
        f"method={method_name}",
        "train.epochs=1",
        "train.batch_size=128",
        "progress=false",
        f"device={device}",
        "model.hidden_sizes=[256,256]",
    ]
    if method_name == "vcl":
        overrides += [f"method.train_samples={samples}", "method.ml_init=false"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    device = resolve_device(cfg.device)
    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    data = Scenario.TASK.labelled(sequence, 0, "train")
    return cfg, device, data, sequence.n_tasks


def fresh(cfg, device: torch.device, data, n_tasks: int, seed: int):
    """A new model, its method (ready for task 1) and optimiser."""
    torch.manual_seed(seed)
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=[2] * n_tasks)
    model = model.to(device)
    method = instantiate(cfg.method)
    method.before_task(model, 0, data)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    return model, method, optimizer


def epoch_seconds(
    measured: dict[str, tuple[str, int]], device: str, root: str, repeats: int
) -> dict[str, float]:
    """Median wall time of one epoch of each measured method through the suite's loop.

    ``measured`` maps a label to ``(method, samples)``. The epochs run in turns (one of each,
    then again, ``repeats`` times, after one warm-up turn), so a change in the machine's
    load during the run shifts every method alike instead of the ratios.
    """
    setups = {
        label: setup(name, samples, device, root) for label, (name, samples) in measured.items()
    }
    times: dict[str, list[float]] = {label: [] for label in measured}
    for repeat in range(repeats + 1):  # the first turn warms up
        for label, (cfg, device_, data, n_tasks) in setups.items():
            model, method, optimizer = fresh(cfg, device_, data, n_tasks, repeat)
            started = time.perf_counter()
            fit(model, data, method.train_step, optimizer, 1, 128, "epoch", progress=False)
            if device_.type == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[label].append(time.perf_counter() - started)
    return {label: statistics.median(values) for label, values in times.items()}


def phase_seconds(method_name: str, samples: int, device: str, root: str) -> dict[str, float]:
    """Seconds of one epoch (``fit``'s steps, after one warm-up epoch) spent per phase.

    ``rest`` is the epoch's wall time minus the four phases: the permutation, the running
    loss and the end-of-epoch check. For a Bayesian model, ``of which KL`` is the time of as
    many forward and backward passes of its KL alone, the KL's share of ``loss`` and
    ``backward``. On a GPU each phase ends with a synchronisation, which
    ``fit`` does not do, so the phases there add up to more than an epoch of ``fit``.
    """
    cfg, device, data, n_tasks = setup(method_name, samples, device, root)
    model, method, optimizer = fresh(cfg, device, data, n_tasks, 0)
    fit(model, data, method.train_step, optimizer, 1, 128, "warm-up", progress=False)
    seconds = dict.fromkeys(PHASES, 0.0)

    def clock(phase: str, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        seconds[phase] += now - started
        return now

    epoch_started = time.perf_counter()
    total = torch.zeros((), device=device)
    for index in torch.randperm(len(data), device=data.y.device).split(128):
        started = time.perf_counter()
        batch = data.subset(index)
        started = clock("batches", started)
        value = method.loss(model, batch)
        started = clock("loss", started)
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        started = clock("backward", started)
        optimizer.step()
        clock("optimizer step", started)
        total += value.detach() * len(batch)
    (total / len(data)).item()  # the one device sync per epoch that fit makes
    seconds["rest"] = time.perf_counter() - epoch_started - sum(seconds.values())
    if hasattr(model, "kl"):  # the KL's part of the loss and backward columns, timed apart
        steps, seconds[KL] = -(-len(data) // 128), 0.0
        started = time.perf_counter()
        for _ in range(steps):
            model.zero_grad(set_to_none=True)
            model.kl(method.seen_heads).backward()
        clock(KL, started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--phases", action="store_true", help="also time each phase of a step")
    args = parser.parse_args()
    keep_freed_memory()
    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))

    seconds = epoch_seconds(
        {"deterministic": ("finetune", 0), "K = 1": ("vcl", 1), "K = 10": ("vcl", 10)},
        args.device,
        root,
        args.repeats,
    )
    deterministic, k1, k10 = seconds["deterministic"], seconds["K = 1"], seconds["K = 10"]
    print(f"Split-MNIST task 1, 784-256-256-2, batch 128, median of {args.repeats} epochs")
    print(f"deterministic (finetune) : {deterministic:.3f} s")
    print(f"VCL, K = 1               : {k1:.3f} s  ({k1 / deterministic:.2f}x, target <= 2.5x)")
    print(f"VCL, K = 10              : {k10:.3f} s  ({k10 / deterministic:.2f}x, target <= 9x)")
    if args.phases:
        print("one epoch by phase, s    : " + "  ".join(f"{p:>14}" for p in (*PHASES, KL)))
        for label, name, samples in (
            ("deterministic", "finetune", 0),
            ("VCL, K = 1", "vcl", 1),
            ("VCL, K = 10", "vcl", 10),
        ):
            seconds = phase_seconds(name, samples, args.device, root)
            cells = [f"{seconds[p]:>14.3f}" for p in PHASES]
            cells.append(f"{seconds[KL]:>14.3f}" if KL in seconds else f"{'-':>14}")
            print(f"{label:<25}: " + "  ".join(cells))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                 : {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
