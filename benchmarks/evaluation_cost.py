"""What the calibration and uncertainty measures add to a run's evaluation time.

A run evaluates after every task: accuracy only, before these measures existed (the argmax of
``method.predict`` on each tested task); now ``cl_bayes.evaluation.evaluate`` (one
``predict(samples=True)`` pass per tested task giving accuracy, NLL, Brier, ECE bins,
entropy and mutual information) and, where the next task is not tested anyway (task- and
class-incremental), one more pass over (``unseen_examples``, 500, of) the next task's test
data for unseen-task detection.

The script replays a whole run's evaluation schedule (every row ``t``: the tasks tested, the
unseen pass, the AUROC) on untrained models of the two VCL protocols, with ``finetune``
(deterministic MLP) and ``vcl`` (100 Monte Carlo samples), and prints the seconds of the
accuracy-only schedule, of the new one split into its two parts (the measures on the tested
tasks' predictions; the unseen pass), and their ratios. The schedules alternate
(``--repeats`` times after a warm-up) and the medians are given.

    CL_BAYES_DATA=<data root> python benchmarks/evaluation_cost.py [--repeats 3] [--threads 1]
        [--benchmarks split_mnist,permuted_mnist] [--methods finetune,vcl] [--unseen-examples 500]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import time

import torch
from hydra import compose, initialize_config_dir

from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.data import LabelledData
from cl_bayes.errors import exit_on_user_error
from cl_bayes.evaluation import detection_auroc, detection_positions, evaluate, unseen_scores
from cl_bayes.metrics import pool_bins
from cl_bayes.scenario import Scenario

# The two VCL protocols: task sequence, scenario and network (the experiment files' own).
BENCHMARKS = {
    "split_mnist": ["+experiment=leaderboard_split_mnist"],
    "permuted_mnist": ["+experiment=leaderboard_permuted_mnist"],
}


@torch.no_grad()
def accuracy_only(method, model, data: LabelledData, n_outputs: int, chunk: int = 10000) -> float:
    """The evaluation as it was: the argmax of ``predict`` against the labels."""
    model.eval()
    data = LabelledData(data.x, data.y, data.head, n_outputs)
    correct = 0
    for start in range(0, len(data), chunk):
        part = data.subset(torch.arange(start, min(start + chunk, len(data))))
        correct += (method.predict(model, part).argmax(dim=1) == part.y).sum().item()
    return correct / max(len(data), 1)


def schedules(method, model, scenario, sequence, eval_sets, unseen_examples):
    """The accuracy-only schedule and the new one (its two parts timed apart)."""
    T = sequence.n_tasks

    def tested(t):
        return range(T) if not scenario.has_untrained_heads else range(t + 1)

    def old() -> float:
        started = time.perf_counter()
        for t in range(T):
            for j in tested(t):
                accuracy_only(method, model, eval_sets[j], scenario.n_outputs(sequence, t))
        return time.perf_counter() - started

    def new() -> tuple[float, float]:
        measures = unseen = 0.0
        for t in range(T):
            started = time.perf_counter()
            n_outputs = scenario.n_outputs(sequence, t)
            results = {j: evaluate(method, model, eval_sets[j], n_outputs) for j in tested(t)}
            pool_bins([results[j].bins for j in range(t + 1)])
            measures += time.perf_counter() - started
            if t + 1 < T:
                started = time.perf_counter()
                positions = detection_positions(len(eval_sets[t + 1]), unseen_examples)
                if t + 1 in results:
                    scores = results[t + 1].scores.subset(positions)
                else:
                    next_task = eval_sets[t + 1].subset(positions)
                    scores = unseen_scores(method, model, next_task, eval_sets[t])
                detection_auroc([results[j].scores for j in range(t + 1)], scores)
                unseen += time.perf_counter() - started
        return measures, unseen

    return old, new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--benchmarks", default="split_mnist,permuted_mnist")
    parser.add_argument("--methods", default="finetune,vcl")
    parser.add_argument(
        "--unseen-examples", type=int, default=500, help="as the run's unseen_examples; 0: all"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    register_task_sequences()
    print(f"$ python {shlex.join(sys.argv)}")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{'benchmark':<16}{'method':<10}{'accuracy only':>15}{'all measures':>14}"
        f"{'unseen pass':>13}{'measures / old':>16}{'total / old':>13}"
    )
    for name in args.benchmarks.split(","):
        for method_name in args.methods.split(","):
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose("config", [*BENCHMARKS[name], f"method={method_name}"])
            torch.manual_seed(0)
            sequence = instantiate(
                cfg.task, root=cfg.data.root, download=False, device=torch.device("cpu"), seed=0
            )
            scenario = Scenario.parse(cfg.scenario)
            eval_sets = [scenario.labelled(sequence, t, "test") for t in range(sequence.n_tasks)]
            model = instantiate(
                cfg.model,
                input_shape=list(sequence.input_shape),
                head_sizes=scenario.head_sizes(sequence),
            )
            method = instantiate(cfg.method)
            if hasattr(method, "seen_heads"):  # VCL predicts through the heads it has trained
                method.seen_heads = list(range(len(scenario.head_sizes(sequence))))
            old, new = schedules(
                method, model, scenario, sequence, eval_sets, args.unseen_examples or None
            )
            old(), new()  # warm-up
            olds, measures, unseens = [], [], []
            for _ in range(args.repeats):
                olds.append(old())
                m, u = new()
                measures.append(m)
                unseens.append(u)
            o, m, u = (statistics.median(v) for v in (olds, measures, unseens))
            print(
                f"{name:<16}{method_name:<10}{o:>13.2f} s{m:>12.2f} s{u:>11.2f} s"
                f"{m / o:>15.2f}x{(m + u) / o:>12.2f}x",
                flush=True,
            )


if __name__ == "__main__":
    exit_on_user_error(main)
