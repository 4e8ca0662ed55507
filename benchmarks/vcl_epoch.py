"""Cost of one VCL training epoch (K = 1 and K = 10 samples) against a deterministic epoch.

All three train on the first task of a protocol through the suite's training loop, Adam lr
1e-3: ``finetune`` on the deterministic MLP, and ``vcl`` on the mean-field Bayesian MLP
(``--sampling``: ``local`` reparameterisation, the default, or ``weights``, one weight draw
per Monte Carlo sample). ``--network split_mnist`` (the default): a 784-256-256 network with
a 2-unit head on the first Split-MNIST task (digits 0/1, ~12.7k examples), batch 128.
``--network permuted_mnist``: the ``vcl_permuted_mnist`` protocol's 784-100-100 network
with one 10-unit head on the first Permuted-MNIST task (60k examples), batch 256. The three
epochs (or ``--steps`` steps each) run in turns; prints the median time of each, per epoch
and per step, and the ratios (targets: K = 1 <= 2.5x, K = 10 <= 9x), plus the peak
resident memory. ``--predict`` adds VCL's prediction (``method.predict(...,
samples=True)``, 100 Monte Carlo samples, as the run evaluates) on the task's test inputs
(10,000 for Permuted MNIST), timed in the same turns. ``--phases`` adds, for each, where
one epoch's time goes: drawing the batches, the loss (forward pass and, for VCL, the KL),
the backward pass and the optimiser step, and the KL's own share.

    python benchmarks/vcl_epoch.py [--repeats 5] [--device cpu] [--phases] [--threads 1]
        [--network permuted_mnist] [--sampling weights] [--steps 50] [--predict]

On a busy CPU host, ``--threads 1`` avoids OpenMP threads spin-waiting for a core.
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

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.bayes.layer import SAMPLING
from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.errors import exit_on_user_error
from cl_bayes.run import resolve_device
from cl_bayes.scenario import Scenario
from cl_bayes.training import fit

PHASES = ("batches", "loss", "backward", "optimizer step", "rest")
# --network: the protocol whose first task and network are measured. Permuted MNIST is
# built with its first task alone: the same data, without permuting nine more copies.
NETWORKS = {
    "split_mnist": {"task": "split_mnist", "hidden_sizes": [256, 256], "batch_size": 128},
    "permuted_mnist": {
        "task": "permuted_mnist",
        "hidden_sizes": [100, 100],
        "batch_size": 256,
        "overrides": ["task.n_tasks=1"],
    },
}
KL = "of which KL"  # forward and backward of the KL alone, as many times as the epoch's steps


def setup(method_name: str, samples: int, device: str, root: str, network: str, sampling: str):
    """The config, device, task-1 training and test data and head sizes of a measured epoch."""
    protocol = NETWORKS[network]
    overrides = [
        f"task={protocol['task']}",
        *protocol.get("overrides", []),
        f"method={method_name}",
        "train.epochs=1",
        f"train.batch_size={protocol['batch_size']}",
        "progress=false",
        f"device={device}",
        f"model.hidden_sizes=[{','.join(map(str, protocol['hidden_sizes']))}]",
    ]
    if method_name == "vcl":
        overrides += [
            f"method.train_samples={samples}",
            "method.ml_init=false",
            f"model.sampling={sampling}",
        ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    device = resolve_device(cfg.device)
    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.parse(cfg.scenario)
    data = scenario.labelled(sequence, 0, "train")
    test = scenario.labelled(sequence, 0, "test")
    return cfg, device, data, test, scenario.head_sizes(sequence)


def fresh(cfg, device: torch.device, data, head_sizes: list[int], seed: int):
    """A new model, its method (ready for task 1) and optimiser."""
    torch.manual_seed(seed)
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=head_sizes)
    model = model.to(device)
    method = instantiate(cfg.method)
    method.before_task(model, 0, data)
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    return model, method, optimizer


def epoch_seconds(
    measured: dict[str, tuple[str, int]],
    device: str,
    root: str,
    repeats: int,
    network: str,
    sampling: str,
    steps: int | None = None,
    predict: bool = False,
) -> tuple[dict[str, float], int]:
    """Median wall time of one epoch of each measured method through the suite's loop.

    ``measured`` maps a label to ``(method, samples)``. The epochs run in turns (one of each,
    then again, ``repeats`` times, after one warm-up turn), so a change in the machine's
    load during the run shifts every method alike instead of the ratios. With ``steps``,
    each takes that many steps instead of an epoch. With ``predict``, every turn also times
    VCL's prediction on the test inputs with the last VCL model of the turn, under the
    label ``VCL prediction, K = <samples>, <inputs> inputs``. Returns the medians and the
    number of steps timed in each.
    """
    setups = {
        label: setup(name, samples, device, root, network, sampling)
        for label, (name, samples) in measured.items()
    }
    times: dict[str, list[float]] = {label: [] for label in measured}
    batch_size = NETWORKS[network]["batch_size"]
    for repeat in range(repeats + 1):  # the first turn warms up
        for label, (cfg, device_, data, test, head_sizes) in setups.items():
            model, method, optimizer = fresh(cfg, device_, data, head_sizes, repeat)
            started = time.perf_counter()
            fit(
                model,
                data,
                method.train_step,
                optimizer,
                1,
                batch_size,
                "epoch",
                progress=False,
                steps=steps,
            )
            synchronize(device_)
            if repeat:
                times[label].append(time.perf_counter() - started)
            if predict and hasattr(model, "kl"):  # the last VCL model of the turn predicts
                predicting = (method, model, test)
        if predict:
            method, model, test = predicting
            started = time.perf_counter()
            method.predict(model, test, samples=True)
            synchronize(test.y.device)
            label = f"VCL prediction, K = {method.predict_samples}, {len(test)} inputs"
            if repeat:
                times.setdefault(label, []).append(time.perf_counter() - started)
    n_steps = steps or -(-len(setups[next(iter(setups))][2]) // batch_size)
    return {label: statistics.median(values) for label, values in times.items()}, n_steps


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that the clock measures it (a no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def phase_seconds(
    method_name: str, samples: int, device: str, root: str, network: str, sampling: str
) -> dict[str, float]:
    """Seconds of one epoch (``fit``'s steps, after one warm-up epoch) spent per phase.

    ``rest`` is the epoch's wall time minus the four phases: the permutation, the running
    loss and the end-of-epoch check. For a Bayesian model, ``of which KL`` is the time of as
    many forward and backward passes of its KL alone, the KL's share of ``loss`` and
    ``backward``. On a GPU each phase ends with a synchronisation, which
    ``fit`` does not do, so the phases there add up to more than an epoch of ``fit``.
    """
    cfg, device, data, _, head_sizes = setup(method_name, samples, device, root, network, sampling)
    batch_size = NETWORKS[network]["batch_size"]
    model, method, optimizer = fresh(cfg, device, data, head_sizes, 0)
    fit(model, data, method.train_step, optimizer, 1, batch_size, "warm-up", progress=False)
    seconds = dict.fromkeys(PHASES, 0.0)

    def clock(phase: str, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        seconds[phase] += now - started
        return now

    epoch_started = time.perf_counter()
    total = torch.zeros((), device=device)
    for index in torch.randperm(len(data), device=data.y.device).split(batch_size):
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
        steps, seconds[KL] = -(-len(data) // batch_size), 0.0
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
    parser.add_argument("--network", choices=sorted(NETWORKS), default="split_mnist")
    parser.add_argument(
        "--sampling", choices=SAMPLING, default="local", help="model.sampling of VCL's network"
    )
    parser.add_argument("--steps", type=int, default=None, help="steps to time instead of an epoch")
    parser.add_argument(
        "--predict", action="store_true", help="also time VCL's prediction on the test inputs"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()
    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))

    seconds, steps = epoch_seconds(
        {"deterministic": ("finetune", 0), "K = 1": ("vcl", 1), "K = 10": ("vcl", 10)},
        args.device,
        root,
        args.repeats,
        args.network,
        args.sampling,
        args.steps,
        args.predict,
    )
    deterministic, k1, k10 = seconds["deterministic"], seconds["K = 1"], seconds["K = 10"]
    widths = "-".join(map(str, NETWORKS[args.network]["hidden_sizes"]))
    timed = f"{args.steps} steps" if args.steps else "one epoch"
    print(
        f"{args.network} task 1, 784-{widths}, batch {NETWORKS[args.network]['batch_size']}, "
        f"VCL sampling={args.sampling}, {torch.get_num_threads()} threads: median of "
        f"{args.repeats} turns of {timed} ({steps} steps) each"
    )

    def per_step(value: float) -> str:
        return f"{value:.3f} s, {1e3 * value / steps:.2f} ms a step"

    print(f"deterministic (finetune) : {per_step(deterministic)}")
    print(f"VCL, K = 1               : {per_step(k1)}  ({k1 / deterministic:.2f}x, target <= 2.5x)")
    print(f"VCL, K = 10              : {per_step(k10)}  ({k10 / deterministic:.2f}x, target <= 9x)")
    for label in seconds.keys() - {"deterministic", "K = 1", "K = 10"}:
        print(f"{label}: {seconds[label]:.3f} s")
    if args.phases:
        print("one epoch by phase, s    : " + "  ".join(f"{p:>14}" for p in (*PHASES, KL)))
        for label, name, samples in (
            ("deterministic", "finetune", 0),
            ("VCL, K = 1", "vcl", 1),
            ("VCL, K = 10", "vcl", 10),
        ):
            seconds = phase_seconds(name, samples, args.device, root, args.network, args.sampling)
            cells = [f"{seconds[p]:>14.3f}" for p in PHASES]
            cells.append(f"{seconds[KL]:>14.3f}" if KL in seconds else f"{'-':>14}")
            print(f"{label:<25}: " + "  ".join(cells))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                 : {peak_mb:.0f} MB")


if __name__ == "__main__":
    exit_on_user_error(main)
