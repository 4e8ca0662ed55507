r"""How far a rounding-sized difference carries a short run: Adam against SGD.

A CUDA graph may round differently from the eager kernels, so a run with graphs and the same
run without them start a rounding apart. This check makes that difference on a CPU, without
graphs: two eager runs of the two-task synthetic sequence the GPU tests use
(``tests/methods/runs.py``'s ``SYNTHETIC``, task-incremental), the second with every
parameter multiplied by ``1 + nudge * N(0, 1)`` right after its first optimiser step. It
prints the largest difference between the two runs' final weights, per method and optimiser
(Adam as configured; SGD at learning rate 0.01).

    python results/checks/rounding_sensitivity.py \
        [--methods finetune,lwf,mc_dropout,ewc] [--nudge 1e-7] [--scenario task]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cl_bayes import checkpoint  # noqa: E402
from cl_bayes.run import run  # noqa: E402
from tests.conftest import compose_config  # noqa: E402
from tests.methods.runs import SYNTHETIC  # noqa: E402

OPTIMIZERS = {"adam": (torch.optim.Adam, []), "sgd": (torch.optim.SGD, ["optimizer=sgd"])}


def final_weights(method: str, scenario: str, optimizer: str, nudge: float) -> dict:
    """The network's weights after a run, nudged by ``nudge`` after its first step (0: not)."""
    cls, overrides = OPTIMIZERS[optimizer]
    step, steps = cls.step, [0]

    def nudged_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        steps[0] += 1
        if steps[0] == 1 and nudge:
            noise = torch.Generator().manual_seed(123)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.mul_(1 + nudge * torch.randn(p.shape, generator=noise).to(p.device))
        return out

    cls.step = nudged_step
    try:
        with tempfile.TemporaryDirectory() as folder:
            cfg = compose_config(
                *SYNTHETIC,
                f"method={method}",
                f"scenario={scenario}",
                f"results_dir={folder}/results",
                *overrides,
            )
            record = run(cfg, Path(folder) / "run")
            if nudge and not steps[0]:
                raise RuntimeError(f"no {cls.__name__} step ran: the nudge was not applied")
            state = checkpoint.load(Path(record["record_path"]).parent / checkpoint.CHECKPOINT_NAME)
            return {k: v.clone() for k, v in state["model"].items()}
    finally:
        cls.step = step


def main() -> None:
    """Print the table of largest differences, per method and optimiser."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="finetune,lwf,mc_dropout,ewc")
    parser.add_argument("--nudge", type=float, default=1e-7)
    parser.add_argument("--scenario", default="task")
    args = parser.parse_args()
    print("| method | optimiser | largest weight difference | in |\n|---|---|---|---|")
    for method in args.methods.split(","):
        for optimizer in OPTIMIZERS:
            plain = final_weights(method, args.scenario, optimizer, 0.0)
            nudged = final_weights(method, args.scenario, optimizer, args.nudge)
            worst, name = max(((plain[k] - nudged[k]).abs().max().item(), k) for k in plain)
            print(f"| {method} | {optimizer} | {worst:.2e} | {name} |", flush=True)


if __name__ == "__main__":
    main()
