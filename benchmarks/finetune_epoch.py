"""Time one finetune epoch through the suite against a minimal hand-written PyTorch loop.

Both train a 784-256-256 MLP with a 2-unit head (Adam, lr 1e-3, batch 128) for one epoch on
the same in-memory tensors: the first Split-MNIST task (digits 0/1, ~12.7k examples).
Prints the median epoch time of each over several repetitions, their ratio (target
<= 1.15) and the peak resident memory. On a CUDA device it also times the suite's epoch with
the step replayed from a CUDA graph (``train.cuda_graphs``; its warm-up and capture
included, as every task pays them), and the time per step of both suite loops once they
run steadily (a two-epoch task's time minus a one-epoch task's, over the steps of an
epoch), so that one call measures the step with and without graphs.

    python benchmarks/finetune_epoch.py [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.errors import exit_on_user_error
from cl_bayes.methods.finetune import Finetune
from cl_bayes.record import device_name
from cl_bayes.run import resolve_device, train_task
from cl_bayes.scenario import Scenario


def minimal_epoch(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 2),
    ).to(x.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for index in torch.randperm(len(y), device=x.device).split(batch_size):
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))
    overrides = [
        "method=finetune",
        "train.epochs=1",
        "train.batch_size=128",
        "progress=false",
        f"device={args.device}",
        "model.hidden_sizes=[256,256]",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    device = resolve_device(cfg.device)

    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.TASK
    data = scenario.labelled(sequence, 0, "train")
    x, y = data.x, data.y

    def suite_epoch(repeat: int, cuda_graph: bool, epochs: int = 1) -> float:
        cfg.train.epochs = epochs
        torch.manual_seed(repeat)
        model = instantiate(
            cfg.model, input_shape=[1, 28, 28], head_sizes=scenario.head_sizes(sequence)
        )
        model = model.to(device)
        started = time.perf_counter()
        train_task(cfg, Finetune(), model, data, 0, sequence.n_tasks, cuda_graph=cuda_graph)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    graphs = device.type == "cuda"
    suite_times, minimal_times = [], []
    # On CUDA: the one-epoch time with graphs, and each loop's second epoch (steady steps).
    graph_times, steady_eager, steady_graph = [], [], []
    for repeat in range(args.repeats + 1):  # the first round warms up both
        suite = suite_epoch(repeat, cuda_graph=False)
        if graphs:
            graph = suite_epoch(repeat, cuda_graph=True)
            eager_second = suite_epoch(repeat, cuda_graph=False, epochs=2) - suite
            graph_second = suite_epoch(repeat, cuda_graph=True, epochs=2) - graph

        torch.manual_seed(repeat)
        started = time.perf_counter()
        minimal_epoch(x, y, 128)
        minimal = time.perf_counter() - started
        if repeat:
            suite_times.append(suite)
            minimal_times.append(minimal)
            if graphs:
                graph_times.append(graph)
                steady_eager.append(eager_second)
                steady_graph.append(graph_second)

    suite, minimal = statistics.median(suite_times), statistics.median(minimal_times)
    print(f"device {device} ({device_name(device)}), {len(y)} examples, batch 128")
    print(f"median of {args.repeats} epochs")
    print(f"suite epoch   : {suite:.4f} s")
    print(f"minimal epoch : {minimal:.4f} s")
    print(f"ratio         : {suite / minimal:.3f} (target <= 1.15)")
    if graphs:
        steps = math.ceil(len(y) / 128)
        graph = statistics.median(graph_times)
        eager_step = statistics.median(steady_eager) / steps
        graph_step = statistics.median(steady_graph) / steps
        print(f"suite epoch, CUDA graphs    : {graph:.4f} s (warm-up and capture included)")
        print(f"step, eager, second epoch   : {1e3 * eager_step:.3f} ms ({steps} steps an epoch)")
        print(f"step, CUDA graphs, 2nd epoch: {1e3 * graph_step:.3f} ms")
    print(f"peak RSS      : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA     : {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    exit_on_user_error(main)
