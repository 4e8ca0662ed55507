"""The posterior summary of a checkpoint: its numbers, head selection and its errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from cl_bayes import checkpoint
from cl_bayes.models.bayes_mlp import BayesMLP
from cl_bayes.models.mlp import MLP
from cl_bayes.posterior_summary import layer_summaries, main
from cl_bayes.run import run


def _model() -> BayesMLP:
    torch.manual_seed(0)
    model = BayesMLP(input_shape=4, hidden_sizes=[3], head_sizes=[2, 2])
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(-2.0, 1.0)
    return model


def test_rows_hold_the_posterior_spread_and_the_kl_to_the_first_prior():
    model, prior_var = _model(), 2.0
    rows = {row["layer"]: row for row in layer_summaries(model.state_dict(), prior_var)}
    assert list(rows) == ["body.0", "heads.0", "heads.1"]
    layer = model.body[0]
    std = layer.weight_posterior_log_var.detach().mul(0.5).exp()
    mean = layer.weight_posterior_mean.detach()
    row = rows["body.0"]
    assert row["parameters"] == 4 * 3 + 3
    assert row["median_std"] == pytest.approx(float(std.median()), rel=1e-6)
    assert row["mean_std"] == pytest.approx(float(std.mean()), rel=1e-6)
    assert row["median_snr"] == pytest.approx(float((mean.abs() / std).median()), rel=1e-6)
    expected_kl = sum(
        float(
            kl_divergence(
                Normal(
                    getattr(layer, f"{name}_posterior_mean").detach().double(),
                    getattr(layer, f"{name}_posterior_log_var").detach().double().mul(0.5).exp(),
                ),
                Normal(0.0, math.sqrt(prior_var)),
            ).sum()
        )
        for name in ("weight", "bias")
    )
    assert row["kl_to_initial_prior"] == pytest.approx(expected_kl, rel=1e-7)


def test_heads_not_trained_yet_are_left_out():
    rows = layer_summaries(_model().state_dict(), 1.0, heads=[1])
    assert [row["layer"] for row in rows] == ["body.0", "heads.1"]


def test_a_vcl_run_directory_is_summarised(tiny_cfg, tmp_path, capsys):
    run(tiny_cfg("method=vcl", "task.n_tasks=2", "method.predict_samples=2"), tmp_path / "vcl")
    assert main([str(tmp_path / "vcl")]) == 0
    out = capsys.readouterr().out
    assert "split_mnist | method=vcl | seed=0 | after task 2 | prior_var=1.0" in out
    for layer in ("body.0", "heads.0", "heads.1"):
        assert f"\n{layer} " in out
    # As after the first task: the heads the method has not trained yet are left out.
    state = checkpoint.load(tmp_path / "vcl" / "checkpoint.pt")
    state["method"]["seen_heads"] = [0]
    checkpoint.save(tmp_path / "first.pt", state)
    assert main([str(tmp_path / "first.pt")]) == 0
    out = capsys.readouterr().out
    assert "\nheads.0 " in out and "heads.1" not in out


def test_a_missing_checkpoint_or_a_deterministic_model_is_one_clear_error(tmp_path, caplog):
    assert main([str(tmp_path)]) == 2
    assert "no checkpoint at" in caplog.text and "run's output directory" in caplog.text
    caplog.clear()
    deterministic = MLP(input_shape=4, hidden_sizes=[3], head_sizes=[2])
    checkpoint.save(tmp_path / "checkpoint.pt", {"model": deterministic.state_dict()})
    assert main([str(tmp_path / "checkpoint.pt")]) == 2
    assert "no mean-field Gaussian layers" in caplog.text
    caplog.clear()
    (tmp_path / "record.json").write_text('{"status": "completed"}')
    assert main([str(tmp_path / "record.json")]) == 2
    assert "is not a checkpoint that python -m cl_bayes wrote" in caplog.text
