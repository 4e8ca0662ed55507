r"""Why a regularised run collapses on Permuted MNIST: a hidden unit silent on the old tasks.

Takes the checkpoint of a run stopped after task ``t`` (``task.n_tasks=t``), finds the hidden
units that are active on none of the old tasks' test examples (their parameters then have zero
importance: no penalty holds them), trains task ``t + 1`` exactly as the full run does (the
checkpoint's random state restored), and prints every 5 epochs the old tasks' accuracy, the
penalty and how many silent units came back to life. At the end it sets the outgoing weights
of the revived units to 0 and measures the old tasks again.

    python -m cl_bayes +experiment=vcl_permuted_mnist_ewc seed=2 task.n_tasks=7 \\
        flush_denormal=false results_dir=results/checks hydra.run.dir=outputs/ewc_seed2_7
    python results/checks/revived_unit.py outputs/ewc_seed2_7/checkpoint.pt

Accuracies are on the first ``--examples`` test examples of each task (2000).
"""

from __future__ import annotations

import argparse
import sys

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cl_bayes import checkpoint
from cl_bayes.config import register_task_sequences
from cl_bayes.errors import UserError
from cl_bayes.loggers.base import Logger
from cl_bayes.methods.base import logits
from cl_bayes.run import set_flush_denormal, train_task
from cl_bayes.scenario import Scenario


def main() -> None:
    """Read the checkpoint, train the next task while watching the silent units, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--examples", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    register_task_sequences()
    try:
        state = checkpoint.load(args.checkpoint)
    except UserError as error:  # missing or damaged: the suite's one-line message
        sys.exit(f"error: {error}")
    target = state["config"]["model"]["_target_"]
    if target != "cl_bayes.models.mlp.MLP":
        sys.exit(f"{args.checkpoint}: the run's model is {target}; this check reads MLPs")
    old_tasks = state["record"]["tasks_completed"]
    T = old_tasks + 1
    cfg = OmegaConf.create(state["config"])  # the run's own configuration, one task longer
    cfg.task.n_tasks, cfg.progress = T, False
    set_flush_denormal(cfg.flush_denormal)
    sequence = instantiate(
        cfg.task, root=cfg.data.root, download=False, device="cpu", seed=cfg.seed
    )
    scenario = Scenario.parse(cfg.scenario)
    train_sets = [scenario.labelled(sequence, t, "train") for t in range(T)]
    positions = torch.arange(args.examples)
    test = [scenario.labelled(sequence, t, "test").subset(positions) for t in range(T)]
    model = instantiate(
        cfg.model, input_shape=list(sequence.input_shape), head_sizes=scenario.head_sizes(sequence)
    )
    method = instantiate(cfg.method)
    if len(model.heads) != 1 or not hasattr(method, "penalty"):
        sys.exit(
            f"{args.checkpoint}: this check reads a single-head (domain- or class-incremental) "
            f"run of a quadratic-penalty method (EWC, online EWC, SI, MAS, L2); this one is "
            f"{type(method).__name__} with {len(model.heads)} heads"
        )
    model.load_state_dict(state["model"])
    method.load_state_dict(state["method"])
    checkpoint.set_rng_state(state["rng"])
    relus = [m for m in model.body.modules() if isinstance(m, torch.nn.ReLU)]
    linears = [m for m in model.body if isinstance(m, torch.nn.Linear)] + [model.heads[0]]

    @torch.no_grad()
    def active_share() -> list[torch.Tensor]:
        """Per hidden layer: the share of the old tasks' examples on which each unit is > 0."""
        shares: list[torch.Tensor] = []
        hooks = [
            r.register_forward_hook(lambda m, i, out: shares.append((out > 0).float().mean(0)))
            for r in relus
        ]
        for t in range(old_tasks):
            logits(model, test[t])
        for hook in hooks:
            hook.remove()
        L = len(relus)
        return [torch.stack(shares[layer::L]).mean(0) for layer in range(L)]

    @torch.no_grad()
    def accuracies() -> str:
        hits = [(logits(model, d).argmax(1) == d.y).float().mean().item() for d in test]
        return " ".join(f"{100 * h:.1f}" for h in hits)

    silent = [share == 0 for share in active_share()]
    print(f"after task {old_tasks}: accuracy on tasks 1..{T} = {accuracies()}")
    for layer, units in enumerate(silent, start=1):
        listed = units.nonzero().flatten().tolist()
        print(f"layer {layer}: units active on no old-task example: {listed}")
    importance = _importance(method)
    for layer, units in enumerate(silent):
        for unit in units.nonzero().flatten().tolist():
            names = [n for n, p in model.named_parameters() if p is linears[layer].weight]
            outgoing = [n for n, p in model.named_parameters() if p is linears[layer + 1].weight]
            if importance is not None:
                print(
                    f"  layer {layer + 1} unit {unit}: importance of its incoming weights "
                    f"{importance[names[0]][unit].sum():.3g}, outgoing "
                    f"{importance[outgoing[0]][:, unit].sum():.3g} (median unit: "
                    f"{importance[names[0]].sum(1).median():.3g}, "
                    f"{importance[outgoing[0]].sum(0).median():.3g})"
                )

    class EveryFiveEpochs(Logger):
        active = True

        def log_epoch(self, task_id, epoch, metrics) -> None:
            if epoch % 5 and epoch != cfg.train.epochs - 1:
                return
            revived = [
                int((s & (a > 0.01)).sum()) for s, a in zip(silent, active_share(), strict=True)
            ]
            with torch.no_grad():
                penalty = method.penalty(model).item()
            print(
                f"task {T} epoch {epoch + 1:3d}: loss {metrics['loss']:.4f} penalty {penalty:.4f} "
                f"revived units per layer {revived} accuracy {accuracies()}",
                flush=True,
            )

    data = method.training_data(old_tasks, train_sets)
    method.before_task(model, old_tasks, data)
    train_task(cfg, method, model, data, old_tasks, T, EveryFiveEpochs())
    print(f"after task {T}: accuracy on tasks 1..{T} = {accuracies()}")
    shares = active_share()
    with torch.no_grad():
        for layer, (was_silent, share) in enumerate(zip(silent, shares, strict=True)):
            revived = was_silent & (share > 0.01)
            for unit in revived.nonzero().flatten().tolist():
                h = linears[layer + 1].weight[:, unit]
                print(
                    f"  layer {layer + 1} unit {unit} revived: active on {100 * share[unit]:.1f} % "
                    f"of the old tasks' examples; outgoing weight norm {h.norm():.2f} (median "
                    f"unit {linears[layer + 1].weight.norm(dim=0).median():.2f})"
                )
            linears[layer + 1].weight[:, revived] = 0
    print(f"revived units' outgoing weights set to 0: accuracy on tasks 1..{T} = {accuracies()}")


def _importance(method) -> dict[str, torch.Tensor] | None:
    """The method's importance per parameter name (EWC: the sum of its tasks' Fishers)."""
    state = method.state_dict()
    if "fisher" in state:
        return {k: sum(f[k] for f in state["fisher"]) for k in state["fisher"][0]}
    return state.get("importance")


if __name__ == "__main__":
    main()
