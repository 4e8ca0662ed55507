"""Adam's three implementations on a CPU: one finetune step each, and why they differ.

torch's ``Adam`` updates parameters with a loop over tensors (the default on a CPU),
``foreach=True`` (the same arithmetic, batched over tensors) or ``fused=True`` (one kernel per
tensor). Every run trains with the default; ``+optimizer.fused=true`` asks for the fused one.
This script times a finetune step (forward, backward, Adam) of the Split-MNIST protocol's
network (784-400-400 MLP, a 2-unit head, batch 128, lr 1e-3) on the first Split-MNIST task's
examples, for each implementation on the same batches from the same initial weights (the
three in turns, step by step), and prints the median step's time, the largest weight
difference from the default after the timed steps (0: the same rounding), the share of the
first layer's second moments that are exactly 0 (weights of pixels that are 0 in every
example get a zero gradient) and what the default's ``sqrt`` of that tensor costs, with and
without the zeros. ``--input-offset 0.001`` adds that much to every pixel, a control in
which no second moment stays 0.

    CL_BAYES_DATA=<data root> python benchmarks/adam_step.py [--steps 300] [--threads 1]
        [--hidden 400,400] [--input-offset 0]

Times are the process's CPU time (``time.process_time``), which sums the CPU time of all its
threads: with ``--threads 1`` (the default) other jobs holding the cores do not count.
Subnormal floats are flushed as in a run (``flush_denormal``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.errors import exit_on_user_error
from cl_bayes.run import set_flush_denormal
from cl_bayes.scenario import Scenario

IMPLEMENTATIONS = {
    "for-loop (default)": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
WARM_UP_STEPS = 50


def per_call_seconds(call, repeats: int) -> float:
    """``call()``'s CPU time, the median of ``repeats`` calls after one untimed call."""
    call()
    times = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per implementation")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--hidden", default="400,400", help="hidden layer sizes")
    parser.add_argument(
        "--input-offset", type=float, default=0.0, help="added to every pixel (a control)"
    )
    args = parser.parse_args()
    if args.steps < 1 or args.threads < 1:
        parser.error("--steps and --threads take a whole number >= 1")
    try:
        hidden = [int(size) for size in args.hidden.split(",")]
    except ValueError:
        parser.error(
            f"--hidden takes layer sizes separated by commas, e.g. 400,400; got {args.hidden!r}"
        )
    if min(hidden) < 1:
        parser.error(f"--hidden takes layer sizes >= 1, got {args.hidden!r}")
    torch.set_num_threads(args.threads)
    register_task_sequences()
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))
    overrides = [
        "task=split_mnist",
        "method=finetune",
        "scenario=task",
        "device=cpu",
        f"model.hidden_sizes=[{','.join(map(str, hidden))}]",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    set_flush_denormal(cfg.flush_denormal)
    sequence = instantiate(cfg.task, root=root, download=True, device="cpu", seed=0)
    data = Scenario.TASK.labelled(sequence, 0, "train")
    data.x.add_(args.input_offset)
    generator = torch.Generator().manual_seed(0)
    total = WARM_UP_STEPS + args.steps
    batches = [torch.randint(len(data), (128,), generator=generator) for _ in range(total)]

    method = instantiate(cfg.method)  # finetune keeps no state of its own
    models, optimizers, times = {}, {}, {label: [] for label in IMPLEMENTATIONS}
    for label, options in IMPLEMENTATIONS.items():
        torch.manual_seed(0)
        models[label] = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=[2])
        optimizers[label] = torch.optim.Adam(models[label].parameters(), lr=1e-3, **options)
    # Step by step, each implementation in turn (the first one rotating), so that a change in
    # the machine's speed reaches all three alike.
    labels = list(IMPLEMENTATIONS)
    for step, index in enumerate(batches):
        batch = data.subset(index)
        first = step % len(labels)
        for label in labels[first:] + labels[:first]:
            started = time.process_time()
            method.train_step(models[label], batch, optimizers[label])
            if step >= WARM_UP_STEPS:
                times[label].append(time.process_time() - started)

    default = labels[0]
    reference_time = statistics.median(times[default])
    print(f"command : CL_BAYES_DATA={root} {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine : torch {torch.__version__}, {torch.get_num_threads()} threads, CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"784-{'-'.join(map(str, hidden))}-2 MLP, Split-MNIST task 1 ({len(data)} examples, "
        f"{args.input_offset:g} added to every pixel), batch 128, Adam lr 1e-3; median of "
        f"{args.steps} steps after {WARM_UP_STEPS}, "
        "the three in turns; CPU clock"
    )
    print(f"{'Adam':<20} {'ms/step':>8} {'x default':>9} {'max |weight - default|':>23}")
    for label in labels:
        step_time = statistics.median(times[label])
        pairs = zip(models[label].parameters(), models[default].parameters(), strict=True)
        difference = max((w - r).abs().max().item() for w, r in pairs)
        print(
            f"{label:<20} {step_time * 1e3:8.3f} {step_time / reference_time:8.2f}x "
            f"{difference:23.2e}"
        )

    first_layer = next(models[default].parameters())
    second_moment = optimizers[default].state[first_layer]["exp_avg_sq"]
    zeros = (second_moment == 0).float().mean().item()
    without_zeros = second_moment.clamp_min(torch.finfo(torch.float32).tiny)
    with_time = per_call_seconds(second_moment.sqrt, 50)
    without_time = per_call_seconds(without_zeros.sqrt, 50)
    print(
        f"first layer's second moments ({second_moment.numel()}): {zeros:.1%} exactly 0; "
        f"sqrt takes {with_time * 1e6:.0f} us on them, {without_time * 1e6:.0f} us with the "
        f"zeros replaced by the smallest normal float"
    )


if __name__ == "__main__":
    exit_on_user_error(main)
