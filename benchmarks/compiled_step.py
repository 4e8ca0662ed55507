"""A method's training step three ways: eager, replayed from a CUDA graph, and torch.compile'd.

The suite replays the training step from a CUDA graph (``train.cuda_graphs``,
:mod:`cl_bayes.cuda_graphs`). ``torch.compile(mode="reduce-overhead")``, which also replays
CUDA graphs (compiled kernels, captured by torch's cudagraph trees), is the other route. This
script times both against the eager step on the same data, through the suite's own epoch
loop (:func:`cl_bayes.training.fit`): the method's ``train_step`` as it is, the same step
replayed from a graph (:class:`~cl_bayes.cuda_graphs.CapturedStep`, Adam built with
``capturable=True``), and ``torch.compile(method.train_step, mode=...)`` (Adam as configured).
The compiled step breaks its graph at ``backward()``: the forward pass and its backward
are compiled together by AOTAutograd, and the optimiser's step is compiled apart.

For each route and repeat, a fresh network trains one epoch, then another fresh network
two epochs; the first is what a task pays (warm-up, capture or compilation included), the
difference over the steps of an epoch the steady step. Medians over ``--repeats`` (after
one warm-up round, which also fills torch.compile's caches for the later rounds: its first
epoch is printed apart, as the first task on a machine pays it). Every compiled phase
starts from ``torch._dynamo.reset()`` and compiles again, from the caches, as each task of a
run would: its guards name the network and the optimiser.

Networks: ``--method finetune`` trains the 784-256-256 MLP of ``finetune_epoch.py`` (batch
128, the first Split-MNIST task); ``--method vcl`` VCL's Permuted-MNIST network
(784-100-100, batch 256, 10 weight samples per step, ``model.sampling=weights``, no
maximum-likelihood start) on the same data.

    CL_BAYES_DATA=<data root> python benchmarks/compiled_step.py --device cuda
        [--method finetune|vcl] [--repeats 3] [--mode reduce-overhead]
        [--routes eager,graph,compile]

On a CPU there is no graph route; ``--mode default`` compiles with Inductor's C++ kernels.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from hydra import compose, initialize_config_dir

from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.cuda_graphs import build_optimizer
from cl_bayes.errors import exit_on_user_error
from cl_bayes.record import device_name
from cl_bayes.run import resolve_device
from cl_bayes.scenario import Scenario
from cl_bayes.training import fit

NETWORKS = {
    "finetune": ["method=finetune", "model.hidden_sizes=[256,256]", "train.batch_size=128"],
    "vcl": [
        "method=vcl",
        "model.hidden_sizes=[100,100]",
        "model.sampling=weights",
        "method.ml_init=false",
        "train.batch_size=256",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(NETWORKS), default="finetune")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mode", default="reduce-overhead", help="torch.compile's mode")
    parser.add_argument("--routes", default="eager,graph,compile")
    args = parser.parse_args()

    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))
    overrides = [*NETWORKS[args.method], "progress=false", f"device={args.device}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    device = resolve_device(cfg.device)
    routes = args.routes.split(",")
    unknown = sorted(set(routes) - {"eager", "graph", "compile"})
    if unknown:
        parser.error(f"unknown routes {unknown}: choose from eager, graph, compile")
    if "graph" in routes and device.type != "cuda":
        print(f"no CUDA device ({device}): the graph route is left out")
        routes.remove("graph")
    if not routes:
        parser.error(f"no route left to time on {device}: add eager or compile to --routes")

    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.TASK
    data = scenario.labelled(sequence, 0, "train")
    batch_size = cfg.train.batch_size
    steps = math.ceil(len(data) / batch_size)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def phase(route: str, epochs: int, seed: int) -> float:
        """Seconds for a fresh network to train ``epochs`` epochs through ``route``."""
        torch.manual_seed(seed)
        model = instantiate(
            cfg.model, input_shape=list(sequence.input_shape), head_sizes=[2] * sequence.n_tasks
        ).to(device)
        method = instantiate(cfg.method)
        train_data = method.training_data(0, [data])
        method.before_task(model, 0, train_data)
        step: Callable = method.train_step
        if route == "compile":
            # Each phase compiles afresh, as a task with its new optimiser would (its guards
            # name the network and the optimiser); the compiled code comes from torch's caches
            # after the warm-up round. Without the reset, dynamo's cache size limit would turn
            # later phases back to eager without a word.
            torch._dynamo.reset()
            step = torch.compile(method.train_step, mode=args.mode)
        optimizer = build_optimizer(
            instantiate(cfg.optimizer), model.parameters(), captured=route == "graph"
        )
        sync()
        started = time.perf_counter()
        fit(
            model,
            train_data,
            step,
            optimizer,
            epochs,
            batch_size,
            label=route,
            progress=False,
            cuda_graph=route == "graph",
        )
        sync()
        return time.perf_counter() - started

    first: dict[str, float] = {}
    one: dict[str, list[float]] = {route: [] for route in routes}
    steady: dict[str, list[float]] = {route: [] for route in routes}
    for repeat in range(args.repeats + 1):  # the first round warms up (and compiles)
        for route in routes:
            print(f"round {repeat + 1}/{args.repeats + 1}: {route}", file=sys.stderr, flush=True)
            single = phase(route, 1, repeat)
            double = phase(route, 2, repeat)
            if repeat == 0:
                first[route] = single
                continue
            one[route].append(single)
            steady[route].append((double - single) / steps)

    print(f"device {device} ({device_name(device)}), torch {torch.__version__}")
    print(
        f"{args.method}: {len(data)} examples, batch {batch_size}, {steps} steps an epoch; "
        f"medians of {args.repeats} repeats; torch.compile mode={args.mode}"
    )
    eager = statistics.median(steady["eager"]) if "eager" in routes else None
    print(f"{'route':<8} {'step ms':>8} {'x eager':>8} {'epoch s':>8} {'first epoch s':>14}")
    for route in routes:
        step_ms = 1e3 * statistics.median(steady[route])
        ratio = f"{step_ms / (1e3 * eager):8.2f}" if eager else f"{'-':>8}"
        print(
            f"{route:<8} {step_ms:8.3f} {ratio} {statistics.median(one[route]):8.3f} "
            f"{first[route]:14.3f}"
        )


if __name__ == "__main__":
    exit_on_user_error(main)
