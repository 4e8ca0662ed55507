"""A CPU training step with subnormal floats kept against flushed to zero (``flush_denormal``).

The network is either trained here, or a run's own, read from its checkpoint:

- by default, the ``vcl_permuted_mnist`` network (784-100-100-10 MLP) trained with plain
  cross-entropy (batch 256, Adam lr 1e-3) on the first Permuted-MNIST task for ``--epochs``
  epochs, subnormals kept (as every run did before ``flush_denormal``); the timed steps are
  on that task's batches;
- with ``--checkpoint <run folder>/checkpoint.pt`` (a run of any method with an MLP, e.g. one
  stopped after a few tasks), the network the run had then, rebuilt from the checkpoint's own
  config; the timed steps are on the first task's batches, which replay and A-GEM's
  reference gradients train on again and again.

A timed step is a forward and backward pass on a batch of 256 and an Adam step (lr 1e-3). The
network and a fresh optimiser are copied anew for each timing, and ``--steps`` steps are timed
with subnormals kept and with them flushed, in alternation, ``--repeats`` times after one
warm-up round. It prints the median step of each, their ratio, and how many gradient entries
of one step are subnormal (nonzero and below float32's smallest normal, 1.18e-38) when kept.
A network that fits its examples with large margins gives them softmax probabilities, and so
gradients, that small, and x86 CPUs compute on such numbers many times slower.

    CL_BAYES_DATA=<data root> python benchmarks/flush_denormal.py [--epochs 20]
        [--checkpoint PATH] [--steps 100] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from cl_bayes import checkpoint
from cl_bayes.config import instantiate, register_task_sequences
from cl_bayes.data import LabelledData, permuted_sequence
from cl_bayes.errors import UserError, exit_on_user_error
from cl_bayes.models.mlp import MLP
from cl_bayes.scenario import Scenario

BATCH = 256


def subnormal_count(tensors) -> int:
    tiny = torch.finfo(torch.float32).tiny
    return sum(int(((t != 0) & (t.abs() < tiny)).sum()) for t in tensors)


def train_steps(model, optimizer, data: LabelledData, batches, collect_grads=False):
    """One Adam step per batch of positions; the gradients of the last step if asked."""
    for positions in batches:
        batch = data.subset(positions)
        optimizer.zero_grad(set_to_none=True)
        scores = model(batch.x, batch.head)[:, : batch.n_outputs]
        F.cross_entropy(scores, batch.y).backward()
        optimizer.step()
    return [p.grad.clone() for p in model.parameters()] if collect_grads else None


def batches_of(data: LabelledData, generator: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(len(data.y), generator=generator).split(BATCH))


def trained_here(root: str, epochs: int, generator: torch.Generator):
    """The network trained on Permuted-MNIST task 1, that task's data, and a description."""
    sequence = permuted_sequence(
        "permuted_mnist", n_tasks=1, root=root, download=True, device=torch.device("cpu"), seed=0
    )
    data = Scenario.DOMAIN.labelled(sequence, 0, "train")
    model = MLP([1, 28, 28], [100, 100], [10])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for epoch in range(epochs):
        train_steps(model, optimizer, data, batches_of(data, generator))
        print(f"epoch {epoch + 1}/{epochs}", end="\r", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    return model, data, f"after {epochs} epochs of Permuted-MNIST task 1 here ({seconds:.1f} s)"


def from_checkpoint(path: Path, root: str):
    """The run's network at its checkpoint, its first task's data, and a description."""
    if not path.is_file():
        sys.exit(f"--checkpoint {path}: no such file (a run folder's checkpoint.pt)")
    state = checkpoint.load(path)
    cfg = OmegaConf.create(state["config"])
    if cfg.model._target_ != "cl_bayes.models.mlp.MLP":
        sys.exit(
            f"{path}: the run's model is {cfg.model._target_}; this script times the "
            f"deterministic MLP (cl_bayes.models.mlp.MLP) of the methods other than VCL"
        )
    register_task_sequences()
    sequence = instantiate(
        cfg.task, root=root, download=True, device=torch.device("cpu"), seed=cfg.seed
    )
    scenario = Scenario.parse(cfg.scenario)
    model = instantiate(
        cfg.model,
        input_shape=list(sequence.input_shape),
        head_sizes=scenario.head_sizes(sequence),
    )
    model.load_state_dict(state["model"])
    record = state["record"]
    data = scenario.labelled(sequence, 0, "train")
    done = record["tasks_completed"]
    network = (
        f"{record['method']} run {record['run_id']} after {done} of {record['n_tasks']} tasks "
        f"({path}); batches of task 1"
    )
    return model, data, network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20, help="training here before timing")
    parser.add_argument("--checkpoint", type=Path, help="a run's checkpoint.pt instead")
    parser.add_argument("--steps", type=int, default=100, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each setting")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))
    if not torch.set_flush_denormal(False):
        sys.exit("this CPU cannot flush subnormal floats (torch.set_flush_denormal): no comparison")

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    try:  # a damaged checkpoint or missing data: the suite's own one-line message
        if args.checkpoint:
            model, data, network = from_checkpoint(args.checkpoint, root)
        else:
            model, data, network = trained_here(root, args.epochs, generator)
    except UserError as error:
        sys.exit(f"error: {error}")
    batches = [b for b in batches_of(data, generator) if len(b) == BATCH][: args.steps]

    def fresh():
        copied = copy.deepcopy(model)
        return copied, torch.optim.Adam(copied.parameters(), lr=1e-3)

    grads = train_steps(*fresh(), data, batches[:1], collect_grads=True)
    subnormal, entries = subnormal_count(grads), sum(g.numel() for g in grads)
    timings: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for flush in (False, True):
            torch.set_flush_denormal(flush)
            copied, optimizer = fresh()
            started = time.perf_counter()
            train_steps(copied, optimizer, data, batches)
            if repeat:
                timings[flush].append((time.perf_counter() - started) / len(batches))
    torch.set_flush_denormal(False)

    kept, flushed = (statistics.median(timings[f]) * 1e3 for f in (False, True))
    print(f"command : CL_BAYES_DATA={root} {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"machine : {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    print(f"network : {network}")
    print(f"step    : batch {BATCH}, Adam lr 1e-3; {len(batches)} steps per timing")
    print(f"subnormal gradient entries in one step, kept: {subnormal} of {entries}")
    for name, value, flush in (("kept", kept, False), ("flushed", flushed, True)):
        each = ", ".join(f"{t * 1e3:.2f}" for t in timings[flush])
        print(f"step with subnormals {name:<7}: {value:.2f} ms (median of {each})")
    print(f"kept / flushed: {kept / flushed:.2f}x")


if __name__ == "__main__":
    exit_on_user_error(main)
