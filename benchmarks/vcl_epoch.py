"""Cost of one VCL training epoch (K = 1 and K = 10 samples) against a deterministic epoch.

All three train a 784-256-256 network with a 2-unit head on the first Split-MNIST task
(digits 0/1, ~12.7k examples), batch 128, Adam lr 1e-3, through the suite's training loop:
``finetune`` on the deterministic MLP, and ``vcl`` on the mean-field Bayesian MLP with local
reparameterisation. Prints the median epoch time of each and the ratios (targets: K = 1
<= 2.5x, K = 10 <= 9x), plus the peak resident memory.

    python benchmarks/vcl_epoch.py [--repeats 5] [--device cpu]
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
from cl_bayes.run import labelled, resolve_device
from cl_bayes.scenario import Scenario
from cl_bayes.training import fit


def epoch_seconds(method_name: str, samples: int, device: str, root: str, repeats: int) -> float:
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
    data = labelled(sequence, Scenario.TASK, 0, "train")
    times = []
    for repeat in range(repeats + 1):  # the first epoch warms up
        torch.manual_seed(repeat)
        model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=[2] * sequence.n_tasks)
        model = model.to(device)
        method = instantiate(cfg.method)
        method.before_task(model, 0, data)
        optimizer = instantiate(cfg.optimizer)(model.parameters())
        started = time.perf_counter()
        fit(model, data, method.loss, optimizer, 1, 128, "epoch", progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if repeat:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    keep_freed_memory()
    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))

    deterministic = epoch_seconds("finetune", 0, args.device, root, args.repeats)
    k1 = epoch_seconds("vcl", 1, args.device, root, args.repeats)
    k10 = epoch_seconds("vcl", 10, args.device, root, args.repeats)
    print(f"Split-MNIST task 1, 784-256-256-2, batch 128, median of {args.repeats} epochs")
    print(f"deterministic (finetune) : {deterministic:.3f} s")
    print(f"VCL, K = 1               : {k1:.3f} s  ({k1 / deterministic:.2f}x, target <= 2.5x)")
    print(f"VCL, K = 10              : {k10:.3f} s  ({k10 / deterministic:.2f}x, target <= 9x)")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS                 : {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
