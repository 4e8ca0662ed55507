"""Every configuration composes and instantiates; values that cannot work fail before training."""

from __future__ import annotations

import functools
import inspect
import math

import pytest
import torch
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import get_method
from omegaconf import OmegaConf

from cl_bayes.config import CONF_DIR, TASKS_DIR, check_config, instantiate
from cl_bayes.data import DATASETS
from cl_bayes.errors import ConfigError, DataNotFoundError
from cl_bayes.methods.base import Method
from cl_bayes.run import run
from cl_bayes.scenario import Scenario
from tests.conftest import compose_config

TASKS = sorted(p.stem for p in TASKS_DIR.glob("*.yaml"))
METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
OPTIMIZERS = sorted(p.stem for p in (CONF_DIR / "optimizer").glob("*.yaml"))
# Data sets present on this machine (and in CI): the others are composed, not built.
LOCAL_DATASETS = {"MNIST"}
SMALL = [
    "task.train_size=16",
    "train.epochs=1",
    "train.batch_size=8",
    "model.hidden_sizes=[8]",
    "progress=false",
    "device=cpu",
]


def test_the_default_method_is_vcl_on_a_bayesian_model():
    cfg = compose_config()
    assert cfg.method._target_ == "cl_bayes.methods.vcl.VCL"
    assert cfg.model._target_ == "cl_bayes.models.bayes_mlp.BayesMLP"
    # Choosing a deterministic method brings back the deterministic network.
    assert compose_config("method=finetune").model._target_ == "cl_bayes.models.mlp.MLP"


def test_the_groups_are_found():
    assert {"split_mnist", "permuted_mnist", "rotated_mnist", "split_cifar10"} <= set(TASKS)
    assert {"finetune", "joint"} <= set(METHODS)
    assert "mlp" in MODELS and {"adam", "sgd"} <= set(OPTIMIZERS)


@functools.cache
def _default_model(method: str) -> str:
    """``_target_`` of the model a method's config selects."""
    return compose_config(f"method={method}").model._target_


@pytest.fixture(scope="module")
def sequences():
    """Task sequences built once per module, keyed by task name."""
    return {}


def _task_kwargs(cfg):
    kwargs = OmegaConf.to_container(cfg.task, resolve=True)
    kwargs.pop("_target_")
    return kwargs


@pytest.mark.parametrize("task", TASKS)
def test_task_config_matches_its_builder(task, compose_cfg):
    cfg = compose_cfg(f"task={task}")
    assert cfg.task.name == task  # task=<name> is tasks/<name>.yaml
    assert cfg.task.get("dataset", "MNIST") in DATASETS  # synthetic reads no data set
    assert Scenario.parse(cfg.scenario) is Scenario(cfg.task.default_scenario)
    builder = get_method(cfg.task._target_)
    # The YAML holds exactly the builder's arguments; run() supplies the rest.
    inspect.signature(builder).bind(
        **_task_kwargs(cfg), root="data", download=False, device=torch.device("cpu"), seed=0
    )


# Every method with every model (on a real and the synthetic task sequence), and every task
# sequence with every optimiser and with every model: not the whole product of the groups.
COMBINATIONS = sorted(
    {
        (task, method, model, "adam")
        for task in ("split_mnist", "synthetic")
        for method in METHODS
        for model in MODELS
    }
    | {(task, "finetune", "mlp", optimizer) for task in TASKS for optimizer in OPTIMIZERS}
    | {(task, "vcl", model, "adam") for task in TASKS for model in MODELS}
)


@pytest.mark.parametrize(("task", "method", "model", "optimizer"), COMBINATIONS)
def test_every_combination_composes_and_instantiates(
    task, method, model, optimizer, compose_cfg, sequences, cached_data
):
    default_model = _default_model(method)
    cfg = compose_cfg(
        f"task={task}", f"method={method}", f"model={model}", f"optimizer={optimizer}", *SMALL
    )
    check_config(cfg)
    for group in ("method", "model", "optimizer"):
        assert callable(get_method(cfg[group]._target_))
    assert cfg.method._target_.startswith(f"cl_bayes.methods.{method}.")  # method=x is x.py
    if cfg.task.get("dataset") not in LOCAL_DATASETS and task != "synthetic":
        return
    if task not in sequences:
        small = compose_cfg(f"task={task}", "task.train_size=16", "task.n_tasks=2")
        sequences[task] = instantiate(
            small.task, root=small.data.root, download=False, device=torch.device("cpu"), seed=0
        )
    sequence = sequences[task]
    scenario = Scenario.parse(cfg.scenario)
    scenario.check(sequence)
    try:
        net = instantiate(
            cfg.model,
            input_shape=list(sequence.input_shape),
            head_sizes=scenario.head_sizes(sequence),
        )
        learner = instantiate(cfg.method)
        data = scenario.labelled(sequence, 0, "train")
        learner.before_task(net, 0, learner.training_data(0, [data]))
    except ConfigError as error:
        # A model that does not suit the method may be refused, clearly; a method's own
        # model never is.
        assert cfg.model._target_ != default_model, error
        assert "model" in str(error)
        return
    assert isinstance(learner, Method)
    opt = instantiate(cfg.optimizer)(net.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    loss = learner.loss(net, data.subset(torch.arange(8)))
    assert loss.ndim == 0 and math.isfinite(loss.item())
    before = [p.detach().clone() for p in net.parameters()]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", r"train\.epochs must be a positive number, got 0"),
        ("train.epochs=-2", r"train\.epochs must be a positive number"),
        ("train.epochs=1.5", r"train\.epochs must be a whole number"),
        ("optimizer.lr=0", r"optimizer\.lr must be a positive number, got 0"),
        ("optimizer.lr=-0.001", r"optimizer\.lr must be a positive number"),
        ("train.batch_size=0", r"train\.batch_size must be a positive whole number or null"),
        ("train.batch_size=0.5", r"train\.batch_size must be a positive whole number .*got 0\.5\."),
        ("seed=1.5", r"seed must be a whole number from 0 to 4294967295, got 1\.5\."),
        ("seed=abc", r"seed must be a whole number from 0 to 4294967295, got 'abc'\."),
        ("seed=-1", r"seed must be a whole number from 0 to 4294967295, got -1\."),
        ("seed=4294967296", r"seed must be .* got 4294967296\."),
        ("seed=true", r"seed must be a whole number .*got True\."),
        ("model.hidden_sizes=32", r"model\.hidden_sizes must list at least one .*; got 32\."),
        ("model.hidden_sizes=null", r"model\.hidden_sizes must list at least one .*; got None\."),
        ("model.hidden_sizes=[16,true]", r"model\.hidden_sizes must list .*\[16, True\]"),
        ("model.hidden_sizes=[]", r"model\.hidden_sizes must list at least one positive width"),
        ("model.hidden_sizes=[16,0]", r"model\.hidden_sizes must list at least one positive"),
        ("model.sampling=flipout", r"model\.sampling must be one of local, weights, got 'flip"),
        ("scenario=tasks", r"Unknown scenario 'tasks'\. Valid scenarios: task, domain, class"),
        ("evaluate_on=val", r"evaluate_on=val needs a validation split: set task\.val_fraction"),
        ("evaluate_on=train", r"evaluate_on must be 'test' or 'val'"),
        ("device=tpu", r"device must be auto, cpu, cuda"),
        ("device=cuda:abc", r"device must be auto, cpu, cuda or cuda:<index>, got 'cuda:abc'\."),
        ("device=cuda:", r"device must be .*, got 'cuda:'\."),
        (
            "train.cuda_graphs=maybe",
            r"^train\.cuda_graphs must be auto, true or false, got 'maybe'\.$",
        ),
        ("train.cuda_graphs=1", r"^train\.cuda_graphs must be auto, true or false, got 1\.$"),
        ("flush_denormal=fast", r"^flush_denormal must be true or false, got 'fast': true flushes"),
        (
            "train.reset_optimizer=sometimes",
            r"^train\.reset_optimizer must be true or false, got 'sometimes': true builds",
        ),
        (
            "train.reset_optimizer=false train.cuda_graphs=true",
            r"^train\.cuda_graphs=true needs train\.reset_optimizer=true: ",
        ),
        (
            "train.cuda_graphs=true",
            r"^train\.cuda_graphs=true needs a CUDA device, .* device is cpu",
        ),
        ("results_dir=null", r"results_dir must be a folder .*, got None\."),
        ("results_dir=''", r"results_dir must be a folder .*, got ''\."),
        ("task.train_size=abc", r"task\.train_size must be a positive whole number .*got 'abc'"),
        ("task.train_size=0", r"task\.train_size must be a positive whole number .*got 0\."),
        ("task.train_size=2.5", r"task\.train_size must be .*got 2\.5\."),
        ("task.n_tasks=abc", r"task\.n_tasks must be a positive whole number .*got 'abc'\."),
        ("task.n_tasks=0", r"task\.n_tasks must be a positive whole number .*got 0\."),
        ("task.val_fraction=abc", r"task\.val_fraction must be a number in \[0, 1\), got 'abc'"),
        ("task.val_fraction=1", r"task\.val_fraction must be a number in \[0, 1\), got 1\."),
        ("logger=wandb logger.mode=foo", r"logger\.mode must be one of online, offline, disabled"),
    ],
)
def test_bad_values_fail_before_anything_is_written(override, message, compose_cfg, tmp_path):
    # The data root is empty and downloads are off: loading first would fail differently.
    cfg = compose_cfg(
        *SMALL,
        f"data.root={tmp_path / 'no_data'}",
        "data.download=false",
        f"results_dir={tmp_path / 'results'}",
        *override.split(),
    )
    with pytest.raises(ConfigError, match=message) as info:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(info.value)  # one line
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.conv_channels=[]", r"model\.conv_channels must list at least one positive channel"),
        ("model.conv_channels=[8,0]", r"model\.conv_channels .*got \[8, 0\]"),
        ("model.conv_channels=16", r"model\.conv_channels .*got 16"),
        ("model.pool_every=-1", r"model\.pool_every must be a whole number >= 0"),
        ("model.pool_every=1.5", r"model\.pool_every .*got 1\.5"),
    ],
)
def test_bad_cnn_options_fail_before_the_data_loads(override, message, compose_cfg, tmp_path):
    # The data root is empty and downloads are off: loading first would fail differently.
    cfg = compose_cfg(
        *SMALL,
        "model=bayes_cnn",
        f"data.root={tmp_path / 'no_data'}",
        "data.download=false",
        f"results_dir={tmp_path / 'results'}",
        override,
    )
    with pytest.raises(ConfigError, match=message) as info:
        run(cfg, tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "results").exists()


def test_null_batch_size_means_full_batch_and_is_valid(compose_cfg):
    check_config(compose_cfg("train.batch_size=null"))
    check_config(compose_cfg("evaluate_on=val", "task.val_fraction=0.1"))


@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=0"],
        ["seed=4294967295"],
        ["device=cuda:1"],
        ["device=cuda"],
        ["task.train_size=null"],
        ["task=rotated_mnist", "task.n_tasks=null"],  # rotated's own default: one per angle
        ["logger=wandb", "logger.mode=offline"],
        ["logger=wandb", "logger.mode=null"],  # WANDB_MODE decides
        ["model=bayes_cnn", "model.hidden_sizes=[]"],  # convolutions straight to the heads
    ],
)
def test_good_values_pass(overrides, compose_cfg):
    check_config(compose_cfg(*overrides))


@pytest.mark.parametrize("task", ["permuted_mnist", "synthetic"])
def test_null_is_refused_where_the_task_builder_has_no_null_default(task, compose_cfg):
    with pytest.raises(
        ConfigError, match=r"task\.n_tasks must be a positive whole number, got None"
    ):
        check_config(compose_cfg(f"task={task}", "task.n_tasks=null"))


@pytest.mark.parametrize("group, name", [("method", "ewc_typo"), ("task", "split_mnst")])
def test_unknown_group_options_list_the_valid_ones(group, name, compose_cfg):
    with pytest.raises(MissingConfigException) as info:
        compose_cfg(f"{group}={name}")
    options = METHODS if group == "method" else TASKS
    for option in options:
        assert option in str(info.value)


def test_instantiate_passes_a_targets_user_errors_through_unwrapped(tmp_path):
    # Hydra wraps anything a _target_ raises in an InstantiationException whose message is a
    # repr; the run must surface the user's error itself (the CLI prints it, exit code 2).
    node = {"_target_": "cl_bayes.data.load_torchvision", "download": False, "device": "cpu"}
    with pytest.raises(ConfigError, match="Unknown dataset 'SVHN'"):
        instantiate(node, dataset="SVHN", root=tmp_path)
    with pytest.raises(DataNotFoundError, match=str(tmp_path)):
        instantiate(node, dataset="MNIST", root=tmp_path)
    with pytest.raises(InstantiationException):  # other failures keep Hydra's context
        instantiate({"_target_": "cl_bayes.models.mlp.MLP", "no_such_argument": 1})
