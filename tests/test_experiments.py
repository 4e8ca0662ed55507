"""The paper-protocol experiment files compose to the protocol of Nguyen et al. (ICLR 2018)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from cl_bayes.config import CONF_DIR, register_task_sequences

SPLIT = {"task": "split_mnist", "scenario": "task", "hidden": [256, 256], "epochs": 120}
SPLIT.update(batch_size=None, coreset=40)
PERMUTED = {"task": "permuted_mnist", "scenario": "domain", "hidden": [100, 100], "epochs": 100}
PERMUTED.update(batch_size=256, coreset=200)

# experiment file -> (protocol, coreset method or None, sampling)
PROTOCOLS = {
    "vcl_split_mnist": (SPLIT, None, "local"),
    "vcl_split_mnist_random_coreset": (SPLIT, "random", "local"),
    "vcl_split_mnist_k_center_coreset": (SPLIT, "k_center", "local"),
    # on Permuted MNIST one set of weights per Monte Carlo sample, as the official code draws
    "vcl_permuted_mnist": (PERMUTED, None, "weights"),
    "vcl_permuted_mnist_random_coreset": (PERMUTED, "random", "weights"),
    "vcl_permuted_mnist_k_center_coreset": (PERMUTED, "k_center", "weights"),
}


@pytest.mark.parametrize("experiment", sorted(PROTOCOLS))
def test_a_paper_experiment_composes_to_the_papers_protocol(experiment):
    protocol, coreset_method, sampling = PROTOCOLS[experiment]
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
    assert cfg.protocol == experiment
    assert cfg.task.name == protocol["task"] and cfg.scenario == protocol["scenario"]
    if protocol["task"] == "permuted_mnist":
        assert cfg.task.n_tasks == 10 and not cfg.task.first_unpermuted
    assert list(cfg.model.hidden_sizes) == protocol["hidden"]
    assert (cfg.model.prior_var, cfg.model.init_log_var) == (1.0, -6.0)
    assert cfg.model.sampling == sampling
    assert cfg.method.epochs == cfg.train.epochs == protocol["epochs"]
    assert cfg.method.batch_size == cfg.train.batch_size == protocol["batch_size"]
    assert cfg.optimizer.lr == 0.001
    assert (cfg.method.train_samples, cfg.method.predict_samples) == (10, 100)
    assert cfg.method.ml_init and cfg.method.beta == 1.0
    assert cfg.method.start_from == "posterior"
    if coreset_method is None:
        assert cfg.method.coreset_size == 0
    else:
        assert cfg.method.coreset_size == protocol["coreset"]
        assert cfg.method.coreset_method == coreset_method
    assert list(cfg.hydra.sweeper.params.seed.split(",")) == ["0", "1", "2"]


METHODS = sorted(path.stem for path in (CONF_DIR / "method").glob("*.yaml"))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_the_three_scenario_protocol_composes_with_every_method(method, scenario):
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            ["+experiment=three_scenarios_split_mnist", f"method={method}", f"scenario={scenario}"],
            return_hydra_config=True,
        )
    assert cfg.protocol == "three_scenarios_split_mnist"
    assert cfg.task.name == "split_mnist" and cfg.task.n_tasks == 5 and cfg.scenario == scenario
    assert list(cfg.model.hidden_sizes) == [400, 400]
    assert (cfg.train.steps, cfg.train.batch_size, cfg.optimizer.lr) == (2000, 128, 0.001)
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.method._target_.startswith(f"cl_bayes.methods.{method}.")
    assert list(cfg.hydra.sweeper.params.seed.split(",")) == ["0", "1", "2"]


CHOSEN = sorted(
    path.stem for path in (CONF_DIR / "experiment").glob("three_scenarios_split_mnist_*.yaml")
)


@pytest.mark.parametrize("experiment", CHOSEN)
def test_a_method_s_chosen_settings_keep_the_three_scenario_protocol(experiment):
    method, scenario = experiment.removeprefix("three_scenarios_split_mnist_").rsplit("_", 1)
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose(
            "config",
            ["+experiment=three_scenarios_split_mnist", f"method={method}", f"scenario={scenario}"],
        )
        cfg = compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
    assert cfg.protocol == "three_scenarios_split_mnist" and cfg.scenario == scenario
    assert cfg.method._target_ == base.method._target_
    for key in ("task", "model", "optimizer", "train"):
        assert cfg[key] == base[key]
    assert list(cfg.hydra.sweeper.params.seed.split(",")) == ["0", "1", "2"]


# The baselines set beside VCL on the VCL paper's protocols: vcl_<benchmark>_<method>.yaml
BESIDE_VCL = sorted(
    path.stem
    for benchmark in ("split_mnist", "permuted_mnist")
    for path in (CONF_DIR / "experiment").glob(f"vcl_{benchmark}_*.yaml")
    if not path.stem.endswith(("_coreset", "_fast"))
)


def test_every_baseline_of_the_vcl_protocols_is_checked():
    assert {"vcl_split_mnist_ewc", "vcl_permuted_mnist_ewc", "vcl_permuted_mnist_si"} <= set(
        BESIDE_VCL
    )


@pytest.mark.parametrize("experiment", BESIDE_VCL)
def test_a_baseline_beside_vcl_keeps_the_vcl_paper_s_protocol(experiment):
    benchmark, method = experiment.removeprefix("vcl_").split("_mnist_")
    register_task_sequences()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", [f"+experiment=leaderboard_{benchmark}_mnist", f"method={method}"])
        cfg = compose("config", [f"+experiment={experiment}"], return_hydra_config=True)
    assert cfg.protocol == base.protocol == f"vcl_{benchmark}_mnist"
    assert cfg.scenario == base.scenario
    assert cfg.method._target_ == base.method._target_
    for key in ("task", "optimizer", "train"):
        assert cfg[key] == base[key]
    # MC dropout adds its dropout rate to the same network; nothing else may change.
    model = {k: v for k, v in cfg.model.items() if k != "dropout"}
    assert model == {k: v for k, v in base.model.items() if k != "dropout"}
    assert cfg.hydra.sweeper.params.method == method
    # At least seeds 0, 1 and 2 (EWC and SI add more, to see how often a collapse recurs).
    assert list(cfg.hydra.sweeper.params.seed.split(","))[:3] == ["0", "1", "2"]
