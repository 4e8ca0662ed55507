"""What a replay step's rows cost: DER++'s step beside plain steps on 128 and on 384 rows.

DER++ trains each step on the current batch and on two memory batches, 3 x 128 rows where
finetune trains on 128. This script separates what those rows cost from what DER++ adds to
them (drawing and gathering the memory batches, routing rows to their heads, the logit
term, storing the batch), on the network and data of ``method_epochs.py``: a 784-256-256 MLP
with a 2-unit head per task, Split-MNIST task 2 after one epoch of DER++ on task 1 (its
memory full), batch 128, Adam lr 1e-3, subnormal floats flushed as in a run. Four steps take
turns, ``--steps`` of each per turn:

- ``finetune``: forward, cross-entropy, backward and Adam on 128 rows of task 2;
- ``384 rows``: the same on three such batches joined (all on task 2's head): the arithmetic
  any step over three 128-row batches does, with none of a replay method's bookkeeping;
- ``DER++ rows``: the same plain step on as many rows as DER++ forwards on average: the batch
  and the distinct entries of its two memory batches of ``r``, ``128 + 2r - r^2 / m`` with a
  memory of ``m`` entries (two independent draws of ``r`` distinct entries share ``r^2 / m``
  on average), rounded; 351 with ``r = 128``, ``m = 500``;
- ``DER++``: ``DER.train_step`` with ``conf/method/der.yaml``'s settings; an entry drawn into
  both memory batches goes through the network once, so it forwards fewer than 384 rows (the
  script prints how many, on average).

Each has its own copy of the network and its own Adam; every turn's batches (and the joined
384-row ones) are built before the timing starts. CPU only. The table gives the median over
``--repeats`` turns (after one warm-up turn) of each step's time and its ratio to the
finetune step of the same turn. ``384 rows`` against ``finetune`` is what three batches of
128 distinct rows cost on the machine, ``DER++ rows`` what DER++'s rows cost with none of its
bookkeeping (drawing and gathering the memory batches, routing rows to their heads, the logit
term, storing the batch): ``DER++`` less ``DER++ rows`` is that bookkeeping.
``method_epochs.py``'s target for DER++'s epoch is 2.2x.

    CL_BAYES_DATA=<data root> python benchmarks/replay_rows.py [--steps 50] [--repeats 7]
        [--threads 1] [--clock cpu]
"""

from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# Run as a script, its own folder is on the import path: method_epochs.py beside it.
from method_epochs import CLOCKS, at_least_one, compose_method, machine, prepare_process

from cl_bayes.config import instantiate
from cl_bayes.data import LabelledData
from cl_bayes.errors import exit_on_user_error
from cl_bayes.methods.base import logits
from cl_bayes.run import set_flush_denormal, train_task
from cl_bayes.scenario import Scenario

BATCH = 128


def plain_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: LabelledData):
    """Forward, cross-entropy, backward and Adam: finetune's step."""
    loss = F.cross_entropy(logits(model, batch), batch.y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=at_least_one, default=50, help="steps of each kind per turn"
    )
    parser.add_argument("--repeats", type=at_least_one, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu")
    args = parser.parse_args()
    root = prepare_process(args.threads)
    clock: Callable[[], float] = CLOCKS[args.clock]

    cfg = compose_method("der", "cpu")
    set_flush_denormal(cfg.flush_denormal)
    device = torch.device("cpu")
    sequence = instantiate(cfg.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.parse("task")
    train_sets = [scenario.labelled(sequence, t, "train") for t in range(2)]
    torch.manual_seed(0)
    head_sizes = scenario.head_sizes(sequence)
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=head_sizes)
    der = instantiate(cfg.method)
    for t in range(2):  # task 1 trained (one epoch), then the method set up for task 2
        data = der.training_data(t, train_sets)
        der.before_task(model, t, data)
        if t == 0:
            train_task(cfg, der, model, data, t, 2)
            der.after_task(model, t, data)

    replay = min(der.replay_batch_size or BATCH, len(der.memory))
    der_rows = round(BATCH + 2 * replay - replay * replay / len(der.memory))

    def batches() -> dict[str, list[LabelledData]]:
        """A turn's batches, built before timing: of 128 rows (``single``), of 384 (three of
        them joined) and of DER++'s ``der_rows`` (the first rows of each joined one)."""
        n_rows = args.steps * 3 * BATCH  # more than one epoch: permutations one after another
        order = torch.cat([torch.randperm(len(data)) for _ in range(n_rows // len(data) + 1)])
        single = [data.subset(rows) for rows in order[:n_rows].split(BATCH)]
        joined = [LabelledData.concat(single[i : i + 3]) for i in range(0, len(single), 3)]
        first_rows = torch.arange(der_rows)
        shorter = [batch.subset(first_rows) for batch in joined]
        return {"single": single[: args.steps], "joined": joined, "shorter": shorter}

    # Each step's batches: the plain steps train on theirs; DER++ on the 128-row ones.
    steps = {"finetune": "single", "384 rows": "joined", "DER++ rows": "shorter", "DER++": "single"}
    networks = {name: copy.deepcopy(model) for name in steps}
    optimizers = {
        name: instantiate(cfg.optimizer)(network.parameters()) for name, network in networks.items()
    }

    def run(name: str, turn_batches: dict[str, list[LabelledData]]) -> None:
        network, optimizer = networks[name], optimizers[name]
        for batch in turn_batches[steps[name]]:
            if name == "DER++":
                der.train_step(network, batch, optimizer)
            else:
                plain_step(network, optimizer, batch)

    times: dict[str, list[float]] = {name: [] for name in steps}
    for turn in range(args.repeats + 1):
        print(f"turn {turn + 1}/{args.repeats + 1}", end="\r", file=sys.stderr, flush=True)
        turn_batches = batches()
        for name in steps:
            started = clock()
            run(name, turn_batches)
            if turn:  # the first turn warms up
                times[name].append((clock() - started) / args.steps)

    # Rows DER++ puts through the network per step (after timing: the count is not timed).
    rows: list[int] = []
    body = networks["DER++"].body
    counting = body.register_forward_hook(lambda module, inputs, out: rows.append(len(out)))
    run("DER++", batches())
    counting.remove()

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command : CL_BAYES_DATA={root} {command}")
    print(f"machine : {machine(device)}")
    print(
        f"Split-MNIST task 2 after one epoch of DER++ on task 1 (memory of {der.memory_size}, "
        f"{len(der.memory)} held), 784-256-256 MLP, batch {BATCH}, Adam lr 1e-3; median of "
        f"{args.repeats} turns of {args.steps} steps each; {args.clock} clock"
    )
    print(f"{'step':10} {'ms':>7} {'x finetune':>11} {'(min-max)':>13}")
    for name, spent in times.items():
        ratios = [s / f for s, f in zip(spent, times["finetune"], strict=True)]
        print(
            f"{name:10} {1e3 * statistics.median(spent):7.2f} {statistics.median(ratios):10.2f}x "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )
    print(
        f"DER++ forwarded {statistics.mean(rows):.1f} rows a step on average (the batch and the "
        f"distinct entries of its two memory batches of {der.replay_batch_size}); "
        f"'DER++ rows' is a plain step on {der_rows}"
    )
    bookkeeping = [d - r for d, r in zip(times["DER++"], times["DER++ rows"], strict=True)]
    print(
        f"DER++ less 'DER++ rows' (its bookkeeping): {1e3 * statistics.median(bookkeeping):.2f} "
        f"ms a step (median over the turns)"
    )


if __name__ == "__main__":
    exit_on_user_error(main)
