"""Time one finetune epoch through the suite against a minimal hand-written PyTorch loop.

Both train a 784-256-256 MLP with a 2-unit head (Adam, lr 1e-3, batch 128) for one epoch on
the same in-memory tensors: the first Split-MNIST task (digits 0/1, ~12.7k examples).
Prints the median epoch time of each over several repetitions, their ratio (target
<= 1.15) and the peak resident memory.

    python benchmarks/finetune_epoch.py [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from cl_bayes.config import CONF_DIR, register_task_sequences
from cl_bayes.methods.finetune import Finetune
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
    from hydra.utils import instantiate

    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.TASK
    data = scenario.labelled(sequence, 0, "train")
    x, y = data.x, data.y

    suite_times, minimal_times = [], []
    for repeat in range(args.repeats + 1):  # the first round warms up both
        torch.manual_seed(repeat)
        model = instantiate(
            cfg.model, input_shape=[1, 28, 28], head_sizes=scenario.head_sizes(sequence)
        )
        model = model.to(device)
        started = time.perf_counter()
        train_task(cfg, Finetune(), model, data, 0, sequence.n_tasks)
        if device.type == "cuda":
            torch.cuda.synchronize()
        suite = time.perf_counter() - started

        torch.manual_seed(repeat)
        started = time.perf_counter()
        minimal_epoch(x, y, 128)
        minimal = time.perf_counter() - started
        if repeat:
            suite_times.append(suite)
            minimal_times.append(minimal)

    suite, minimal = statistics.median(suite_times), statistics.median(minimal_times)
    print(f"device {device}, {len(y)} examples, batch 128, median of {args.repeats} epochs")
    print(f"suite epoch   : {suite:.4f} s")
    print(f"minimal epoch : {minimal:.4f} s")
    print(f"ratio         : {suite / minimal:.3f} (target <= 1.15)")
    print(f"peak RSS      : {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA     : {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
