"""How sure a Bayesian run is: its posterior, layer by layer, from a checkpoint.

``python -m cl_bayes.posterior_summary RUN_DIR_OR_CHECKPOINT [...]`` reads the checkpoint a
run writes after every task (``<run dir>/checkpoint.pt``) and prints, for every mean-field
layer of the model (the body and the heads trained so far), the posterior standard
deviations of its weights (median and mean), the median signal-to-noise ratio ``|mean| /
std`` of its weights, and ``KL(posterior || N(0, prior_var))`` over its weights and biases:
how far the run has moved from the first prior, in nats. A larger posterior spread is a
weaker prior for the next task.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from cl_bayes import checkpoint
from cl_bayes.bayes.gaussian import kl_diagonal_gaussians
from cl_bayes.bayes.layer import NAMES
from cl_bayes.errors import UserError

log = logging.getLogger(__name__)
SUFFIX = ".weight_posterior_log_var"


def layer_summaries(
    state_dict: Mapping[str, Tensor], prior_var: float, heads: Sequence[int] | None = None
) -> list[dict[str, Any]]:
    """One row per mean-field layer of ``state_dict`` (a Bayesian model's state).

    ``heads``: the indices of the heads to include (``None``: every head). Each row has
    ``layer`` (its name in the model), ``parameters`` (weights and biases), ``median_std``
    and ``mean_std`` (posterior standard deviations of the weights), ``median_snr``
    (``|mean| / std`` of the weights) and ``kl_to_initial_prior`` (nats, weights and biases
    against ``N(0, prior_var)``).
    """
    rows = []
    for key in state_dict:
        if not key.endswith(SUFFIX):
            continue
        layer = key[: -len(SUFFIX)]
        if (
            heads is not None
            and layer.startswith("heads.")
            and int(layer.split(".")[1]) not in heads
        ):
            continue
        kl = 0.0
        for name in NAMES:
            mean = state_dict[f"{layer}.{name}_posterior_mean"].double()
            log_var = state_dict[f"{layer}.{name}_posterior_log_var"].double()
            prior_log_var = torch.full_like(log_var, math.log(prior_var))
            kl += float(kl_diagonal_gaussians(mean, log_var, torch.zeros_like(mean), prior_log_var))
        mean = state_dict[f"{layer}.weight_posterior_mean"].double()
        std = state_dict[key].double().mul(0.5).exp()
        rows.append(
            {
                "layer": layer,
                "parameters": mean.numel() + state_dict[f"{layer}.bias_posterior_mean"].numel(),
                "median_std": float(std.median()),
                "mean_std": float(std.mean()),
                "median_snr": float((mean.abs() / std).median()),
                "kl_to_initial_prior": kl,
            }
        )
    return rows


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows of :func:`layer_summaries` as an aligned text table."""
    lines = [
        f"{'layer':<12} {'params':>8} {'median std':>11} {'mean std':>9} {'median |m|/s':>13} "
        f"{'KL to N(0, prior_var), nats':>28}"
    ]
    for row in rows:
        lines.append(
            f"{row['layer']:<12} {row['parameters']:>8} {row['median_std']:>11.4f} "
            f"{row['mean_std']:>9.4f} {row['median_snr']:>13.3f} "
            f"{row['kl_to_initial_prior']:>28.1f}"
        )
    return "\n".join(lines)


def summarise_checkpoint(path: Path) -> tuple[str, list[dict[str, Any]]]:
    """A title line and the layer rows of one run directory or checkpoint file."""
    file = path / checkpoint.CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(
            f"no checkpoint at {file}: pass a run's output directory (it holds "
            f"{checkpoint.CHECKPOINT_NAME}) or the checkpoint file itself."
        )
    # Runs no code from the file: one UserError for a file it cannot or will not read.
    state = checkpoint.load(file)
    model_state = state.get("model", {}) if isinstance(state, dict) else {}
    if not any(key.endswith(SUFFIX) for key in model_state):
        raise UserError(
            f"{file} holds no mean-field Gaussian layers: it is not a run of a Bayesian model "
            "(model=bayes_mlp or model=bayes_cnn)."
        )
    config = state.get("config", {})
    prior_var = config.get("model", {}).get("prior_var", 1.0)
    heads = state.get("method", {}).get("seen_heads")
    record = state.get("record", {})
    done = record.get("tasks_completed", len(state.get("accuracy_matrix", [])))
    title = (
        f"{file}: {record.get('task', '?')} | method={record.get('method', '?')} | "
        f"seed={config.get('seed', '?')} | after task {done} | prior_var={prior_var}"
    )
    return title, layer_summaries(model_state, prior_var, heads)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; a user error is logged as one line and gives exit code 2."""
    parser = argparse.ArgumentParser(
        prog="python -m cl_bayes.posterior_summary",
        description="Per-layer summary of the Gaussian posterior in a run's checkpoint.",
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, help="run output directories or checkpoint files"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        tables = []
        for path in args.paths:
            title, rows = summarise_checkpoint(path)
            tables.append(f"{title}\n{format_table(rows)}")
    except UserError as error:
        log.error(f"error: {error}")
        return 2
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
