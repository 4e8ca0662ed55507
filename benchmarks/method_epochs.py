"""Cost of one training epoch of every method against finetune, with penalties and memories live.

Every method configured in ``conf/method/*.yaml`` (found when the script starts) trains a
784-256-256 MLP (``model=mlp``) with a 2-unit head per task on the first two Split-MNIST
tasks (task-incremental, the same in-memory tensors for all), through the loop's own hooks:
``training_data``, ``before_task``, one epoch of ``train_task`` (``method.train_step``,
batch 128, Adam lr 1e-3, a fresh optimiser per task) and ``after_task``. Task 1 trains one
epoch, untimed, so that what the method keeps (anchors, Fisher, importances, memories,
snapshots) is live on task 2; then task 2's epoch and its ``after_task`` are timed.

The methods run in turns (one task-1/task-2 sequence of each, then again, ``--repeats``
times after one warm-up turn), and within a turn every method's sequence runs right after a
sequence of finetune of its own, so that a change in the machine's load shifts both sides of
each ratio alike. The table gives each method's median epoch and ``after_task`` times, and
the median over the turns of their ratios to the epoch of **the finetune sequence run just
before**, with the range of the epoch ratio over the turns. Targets: the epoch against
finetune's (EWC, online EWC, SI, MAS, L2 <= 1.3x; LwF <= 1.8x; ER and DER++ <= 2.2x;
A-GEM <= 3x) and task 2's ``after_task`` against one finetune epoch (<= 1x, every method).
``joint`` trains on tasks 1-2 together (twice the data) and has no epoch target. Methods
that bring their own Bayesian model (``vcl``, ``coreset_only``) are listed and skipped:
``benchmarks/vcl_epoch.py`` times them. The peak RSS column is the process's peak after
the method's warm-up turn (cumulative, in the order of the table: a rise is that method's);
on CUDA the peak memory allocated by the method's turns is given as well.

    CL_BAYES_DATA=<data root> python benchmarks/method_epochs.py [--repeats 5] [--device cpu]
        [--methods finetune,lwf] [--threads 1] [--scenario task|domain|class]

``--scenario`` measures the same two tasks domain- or class-incrementally instead (one shared
head of 2 units, or of the 4 classes of both tasks): in class-IL the expected Fisher of EWC and
online EWC sums over every active output, its most expensive case.

On a busy CPU host, ``--threads 1`` avoids OpenMP threads spin-waiting for a core (on a
2-core machine shared with other jobs, finetune's epoch took 8 s with 2 threads, 1 s with 1),
and ``--clock cpu`` times the process's CPU time (``time.process_time``) instead of the wall
clock, so that the time other jobs hold the cores is not counted (CPU devices only).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from cl_bayes.allocator import keep_freed_memory
from cl_bayes.config import CONF_DIR, instantiate, register_task_sequences
from cl_bayes.data import LabelledData
from cl_bayes.errors import exit_on_user_error
from cl_bayes.run import resolve_device, set_flush_denormal, train_task
from cl_bayes.scenario import Scenario

REFERENCE = "finetune"
# Epoch time against finetune's, at most (methods not listed have no epoch target).
EPOCH_TARGETS = {
    "ewc": 1.3,
    "online_ewc": 1.3,
    "si": 1.3,
    "mas": 1.3,
    "l2": 1.3,
    "lwf": 1.8,
    "er": 2.2,
    "der": 2.2,
    "derpp": 2.2,
    "agem": 3.0,
}
AFTER_TASK_TARGET = 1.0  # task 2's after_task, in finetune epochs
NOTES = {"joint": "trains on tasks 1-2: twice the data"}
OVERRIDES = [
    "task=split_mnist",
    "task.n_tasks=2",
    "train.epochs=1",
    "train.batch_size=128",
    "optimizer=adam",
    "optimizer.lr=0.001",
    "progress=false",
]


@dataclass
class Measured:
    """One method's configuration and timings (seconds per turn)."""

    name: str
    cfg: DictConfig
    epoch: list[float] = field(default_factory=list)
    after_task: list[float] = field(default_factory=list)
    # The epoch of the finetune sequence run just before each of this method's turns.
    reference_epoch: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float | None = None
    error: str | None = None


def method_names() -> list[str]:
    """Every ``conf/method/*.yaml``, finetune first."""
    names = sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))
    return [REFERENCE] + [name for name in names if name != REFERENCE]


def compose_method(name: str, device: str, scenario: str = "task") -> DictConfig:
    """The run configuration of ``method=name`` on the measured protocol."""
    overrides = [
        f"method={name}",
        *OVERRIDES,
        f"scenario={scenario}",
        f"device={device}",
        "model.hidden_sizes=[256,256]",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_turn(
    measured: Measured,
    train_sets: list[LabelledData],
    head_sizes: list[int],
    device: torch.device,
    seed: int,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[float, float]:
    """Train task 1 (untimed), then time task 2's epoch and its ``after_task``."""
    cfg = measured.cfg
    torch.manual_seed(seed)
    model = instantiate(cfg.model, input_shape=[1, 28, 28], head_sizes=head_sizes).to(device)
    method = instantiate(cfg.method)
    T = len(train_sets)
    for t in range(T):
        data = method.training_data(t, train_sets[: t + 1])
        method.before_task(model, t, data)
        sync(device)
        started = clock()
        train_task(cfg, method, model, data, t, T)
        sync(device)
        epoch = clock() - started
        started = clock()
        method.after_task(model, t, data)
        sync(device)
        after_task = clock() - started
    return epoch, after_task


def measure(
    methods: list[Measured],
    train_sets: list[LabelledData],
    head_sizes: list[int],
    device: torch.device,
    repeats: int,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Run every method's turn ``repeats + 1`` times, in turns; the first turn warms up.

    ``methods[0]`` is the reference: every other method's turn follows one of its own.
    """
    reference = methods[0]
    for repeat in range(repeats + 1):
        print(f"turn {repeat + 1}/{repeats + 1}", end="\r", file=sys.stderr, flush=True)
        for measured in methods:
            if measured.error or reference.error:
                continue
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                reference_epoch, reference_after = one_turn(
                    reference, train_sets, head_sizes, device, repeat, clock
                )
            except Exception as error:
                reference.error = f"{type(error).__name__}: {error}".splitlines()[0][:100]
                continue
            epoch, after_task = reference_epoch, reference_after
            if measured is not reference:
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                try:
                    epoch, after_task = one_turn(
                        measured, train_sets, head_sizes, device, repeat, clock
                    )
                except Exception as error:  # a method being written may not run yet: say so
                    measured.error = f"{type(error).__name__}: {error}".splitlines()[0][:100]
                    continue
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device) / 2**20
                measured.peak_cuda_mb = max(measured.peak_cuda_mb or 0.0, peak)
            if repeat == 0:
                measured.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            else:
                measured.epoch.append(epoch)
                measured.after_task.append(after_task)
                measured.reference_epoch.append(reference_epoch)


def machine(device: torch.device) -> str:
    """The machine in one line: host, CPU, cores, threads, torch, and the GPU if used."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = (
        f"{platform.node()}, {cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"with {torch.get_num_threads()} threads"
    )
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return text


def table(methods: list[Measured], skipped: dict[str, str], device: torch.device) -> str:
    """One row per method: medians over the turns, ratios to the finetune run just before."""
    cuda = device.type == "cuda"
    header = (
        f"{'method':<13} {'epoch s':>8} {'x finetune':>10} {'(min-max)':>13} {'target':>7} "
        f"{'after_task s':>12} {'x ft epoch':>10} {'peak RSS MB':>11}"
        + (f" {'peak CUDA MB':>12}" if cuda else "")
        + "  verdict"
    )
    lines = [header, "-" * len(header)]
    for m in methods:
        if m.error:
            lines.append(f"{m.name:<13} not measured: {m.error}")
            continue
        ratios = [a / b for a, b in zip(m.epoch, m.reference_epoch, strict=True)]
        after_ratios = [a / b for a, b in zip(m.after_task, m.reference_epoch, strict=True)]
        ratio, after_ratio = statistics.median(ratios), statistics.median(after_ratios)
        target = EPOCH_TARGETS.get(m.name)
        if m.name == REFERENCE:
            verdict = "reference"
        else:
            failed = []
            if target is not None and ratio > target:
                failed.append("epoch")
            if after_ratio > AFTER_TASK_TARGET:
                failed.append("after_task")
            verdict = "FAIL (" + ", ".join(failed) + ")" if failed else "pass"
        if m.name in NOTES:
            verdict += f"; {NOTES[m.name]}"
        spread = f"({min(ratios):.2f}-{max(ratios):.2f})"
        lines.append(
            f"{m.name:<13} {statistics.median(m.epoch):>8.3f} {ratio:>9.2f}x {spread:>13} "
            f"{f'<= {target:g}x' if target else '-':>7} "
            f"{statistics.median(m.after_task):>12.4f} {after_ratio:>9.2f}x "
            f"{m.peak_rss_mb:>11.0f}"
            + (f" {m.peak_cuda_mb:>12.0f}" if cuda else "")
            + f"  {verdict}"
        )
    for name, reason in skipped.items():
        lines.append(f"{name:<13} skipped: {reason}")
    return "\n".join(lines)


def at_least_one(text: str) -> int:
    """``argparse`` type: a whole number >= 1 (turns, steps), else one line saying so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number >= 1, got {text!r}")
    return value


def prepare_process(threads: int | None) -> str:
    """Set torch's CPU threads (``None``: torch's own), the allocator and the task registry as
    a run sets them; return the data root (``CL_BAYES_DATA``, else ``data/`` in the repository)."""
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()
    register_task_sequences()
    return os.environ.get("CL_BAYES_DATA", str(Path(__file__).resolve().parents[1] / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=at_least_one, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--scenario",
        choices=[s.value for s in Scenario],
        default="task",
        help="task: a 2-unit head per task (the targets' setting); domain: one shared 2-unit "
        "head; class: one head over both tasks' 4 classes (the expected Fisher sums over every "
        "active output)",
    )
    parser.add_argument(
        "--methods", default=None, help="comma-separated subset (default: every method config)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's own)"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time, which other jobs on a shared "
        "CPU host do not inflate (CPU devices only)",
    )
    args = parser.parse_args()
    root = prepare_process(args.threads)

    names = method_names()
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            parser.error(f"no conf/method/<name>.yaml for {', '.join(unknown)}")
        names = [n for n in names if n in wanted or n == REFERENCE]

    base = compose_method(REFERENCE, args.device, args.scenario)
    device = resolve_device(base.device)
    set_flush_denormal(base.flush_denormal)  # as a run does (conf/config.yaml)
    if args.clock == "cpu" and device.type != "cpu":
        parser.error(
            f"--clock cpu times the host's CPU, but the device is {device} (--device "
            f"{args.device}): add --device cpu to time the CPU, or use --clock wall on the GPU"
        )
    sequence = instantiate(base.task, root=root, download=True, device=device, seed=0)
    scenario = Scenario.parse(args.scenario)
    train_sets = [scenario.labelled(sequence, t, "train") for t in range(sequence.n_tasks)]
    head_sizes = scenario.head_sizes(sequence)

    methods, skipped = [], {}
    for name in names:
        try:
            cfg = compose_method(name, args.device, args.scenario)
        except Exception as error:
            skipped[name] = f"config does not compose ({type(error).__name__}: {error})"[:120]
            continue
        if cfg.model._target_ != base.model._target_:
            skipped[name] = (
                f"brings its own model ({cfg.model._target_.rsplit('.', 1)[-1]}); "
                f"timed by benchmarks/vcl_epoch.py"
            )
            continue
        methods.append(Measured(name, cfg))

    measure(methods, train_sets, head_sizes, device, args.repeats, CLOCKS[args.clock])
    if not methods or methods[0].error:
        sys.exit(f"the reference method {REFERENCE} did not run: {methods[0].error}")

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    print(f"command : CL_BAYES_DATA={root} {command}")
    print(f"machine : {machine(device)}")
    print(
        f"Split-MNIST task 2 after task 1 ({scenario.value}-incremental), 784-256-256 MLP, "
        f"heads of {'/'.join(map(str, head_sizes))} units, "
        f"batch 128, Adam lr 1e-3, {len(train_sets[1])} examples; device {device}; "
        f"median of {args.repeats} turns, methods in turns; {args.clock} clock"
    )
    print(table(methods, skipped, device))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the process: {peak_mb:.0f} MB")


if __name__ == "__main__":
    exit_on_user_error(main)
