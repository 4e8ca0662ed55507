"""Configuration: the ``task=`` group read from ``tasks/``, and checks before any work starts."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import hydra.utils
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from cl_bayes.bayes.layer import SAMPLING
from cl_bayes.cuda_graphs import check_setting as check_cuda_graphs
from cl_bayes.errors import ConfigError, UserError
from cl_bayes.loggers.wandb import MODES as LOGGER_MODES
from cl_bayes.models.bayes_cnn import check_conv_options
from cl_bayes.scenario import Scenario

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# A regular install (`pip install .`) has no repository around the package: the wheel ships
# copies of conf/ and tasks/ inside it (setup.py). A checkout or an editable install has no such
# copies and reads the top-level folders, the ones under version control.
_CONFIG_ROOT = PACKAGE_DIR if (PACKAGE_DIR / "conf").is_dir() else REPO_ROOT
CONF_DIR = _CONFIG_ROOT / "conf"
TASKS_DIR = _CONFIG_ROOT / "tasks"


def register_task_sequences(tasks_dir: Path = TASKS_DIR) -> list[str]:
    """Make every ``tasks/<name>.yaml`` selectable as ``task=<name>``; returns the names.

    Task sequences live in the top-level ``tasks/`` folder (``TASKS_DIR``) rather than
    ``conf/task/``, so they are registered with Hydra's config store under the group ``task``.
    """
    store = ConfigStore.instance()
    names = []
    for path in sorted(tasks_dir.glob("*.yaml")):
        store.store(group="task", name=path.stem, node=OmegaConf.load(path))
        names.append(path.stem)
    return names


def instantiate(config: Any, *args: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, letting a :class:`UserError` raised by the target through.

    Hydra wraps whatever a ``_target_`` raises in an ``InstantiationException`` whose message
    is the ``repr`` of the original; a bad task option or a missing data set must reach the
    user as the one clear error it is.
    """
    try:
        return hydra.utils.instantiate(config, *args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        raise


# The values of `device`: what resolve_device and torch.device accept.
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def _positive(value, name: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        hint = " or null" if allow_null else ""
        raise ConfigError(f"{name} must be a positive number{hint}, got {value!r}.")


def _whole_number(
    value: Any, name: str, minimum: int = 1, maximum: int | None = None, null: str | None = None
) -> None:
    """Raise unless ``value`` is an ``int`` in ``[minimum, maximum]``.

    ``null`` says what ``None`` means where it is allowed (e.g. ``"full batch"``).
    """
    if value is None and null is not None:
        return
    if (
        not isinstance(value, bool)
        and isinstance(value, int)
        and value >= minimum
        and (maximum is None or value <= maximum)
    ):
        return
    if maximum is not None:
        expected = f"a whole number from {minimum} to {maximum}"
    elif minimum == 1:
        expected = "a positive whole number"
    else:
        expected = f"a whole number >= {minimum}"
    if null is not None:
        expected += f" or null ({null})"
    raise ConfigError(f"{name} must be {expected}, got {value!r}.")


def _null_allowed(task: DictConfig, key: str) -> bool:
    """Whether the task builder's own default for ``key`` is ``None`` (e.g. rotated's n_tasks)."""
    try:
        parameter = inspect.signature(hydra.utils.get_method(task._target_)).parameters[key]
    except Exception:  # an unknown builder fails on its own, with Hydra's message
        return True
    return parameter.default is None


def _check_task(task: DictConfig) -> None:
    """The options every task builder shares; the builders check them again, with the data."""
    if "n_tasks" in task:
        null = "as many as the data set allows" if _null_allowed(task, "n_tasks") else None
        _whole_number(task.n_tasks, "task.n_tasks", null=null)
    if "train_size" in task:
        null = "all" if _null_allowed(task, "train_size") else None
        _whole_number(task.train_size, "task.train_size", null=null)
    if "val_fraction" in task:
        fraction = task.val_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not (0 <= fraction < 1)
        ):
            raise ConfigError(f"task.val_fraction must be a number in [0, 1), got {fraction!r}.")


def check_config(cfg: DictConfig) -> None:
    """Raise one clear :class:`ConfigError` for a value that cannot work, before any work.

    Each message is one line naming the key, the value given and what is expected.
    """
    Scenario.parse(cfg.scenario)
    # numpy's global generator takes seeds below 2**32 only.
    _whole_number(cfg.seed, "seed", minimum=0, maximum=2**32 - 1)
    _positive(cfg.train.epochs, "train.epochs")
    if not isinstance(cfg.train.epochs, int):
        raise ConfigError(f"train.epochs must be a whole number, got {cfg.train.epochs!r}.")
    _whole_number(cfg.train.batch_size, "train.batch_size", null="full batch")
    _whole_number(cfg.train.get("steps"), "train.steps", null="train.epochs passes per task")
    check_cuda_graphs(cfg.train.get("cuda_graphs", "auto"))
    reset_optimizer = cfg.train.get("reset_optimizer", True)
    if not isinstance(reset_optimizer, bool):
        raise ConfigError(
            f"train.reset_optimizer must be true or false, got {reset_optimizer!r}: true builds "
            f"a fresh optimiser for every task, false keeps one optimiser across tasks."
        )
    if not reset_optimizer and cfg.train.get("cuda_graphs", "auto") is True:
        raise ConfigError(
            "train.cuda_graphs=true needs train.reset_optimizer=true: a step is captured with "
            "an optimiser built for its task. Use train.cuda_graphs=auto or false to keep the "
            "optimiser across tasks."
        )
    if not isinstance(cfg.get("flush_denormal", True), bool):
        raise ConfigError(
            f"flush_denormal must be true or false, got {cfg.flush_denormal!r}: true flushes "
            f"subnormal floats to zero in CPU arithmetic (faster), false keeps them."
        )
    if "lr" in cfg.optimizer:
        _positive(cfg.optimizer.lr, "optimizer.lr")
    if "hidden_sizes" in cfg.model:
        sizes = cfg.model.hidden_sizes
        # A CNN may go straight from its convolutions to the heads; an MLP needs a layer.
        empty_ok = "conv_channels" in cfg.model and sizes is not None
        if (
            not OmegaConf.is_list(sizes)
            or (not sizes and not empty_ok)
            or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes)
        ):
            what = "positive widths (or none)" if empty_ok else "at least one positive width"
            shown = OmegaConf.to_container(sizes) if OmegaConf.is_list(sizes) else sizes
            raise ConfigError(
                f"model.hidden_sizes must list {what}, e.g. [256,256]; got {shown!r}."
            )
    if "conv_channels" in cfg.model:
        channels = cfg.model.conv_channels
        check_conv_options(
            OmegaConf.to_container(channels) if OmegaConf.is_list(channels) else channels,
            cfg.model.get("pool_every"),
        )
    if "sampling" in cfg.model and cfg.model.sampling not in SAMPLING:
        raise ConfigError(
            f"model.sampling must be one of {', '.join(SAMPLING)}, got {cfg.model.sampling!r}."
        )
    _check_task(cfg.task)
    if cfg.evaluate_on not in ("test", "val"):
        raise ConfigError(f"evaluate_on must be 'test' or 'val', got {cfg.evaluate_on!r}.")
    _whole_number(cfg.get("unseen_examples"), "unseen_examples", null="all of them")
    if cfg.evaluate_on == "val" and not cfg.task.get("val_fraction"):
        raise ConfigError("evaluate_on=val needs a validation split: set task.val_fraction > 0.")
    if not DEVICE.fullmatch(str(cfg.device)):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {cfg.device!r}.")
    if not isinstance(cfg.results_dir, str) or not cfg.results_dir:
        raise ConfigError(
            "results_dir must be a folder (run records are collected under "
            f"<results_dir>/runs), got {cfg.results_dir!r}."
        )
    # null: WANDB_MODE (or W&B's settings) decides.
    mode = cfg.logger.get("mode")
    if mode is not None and mode not in LOGGER_MODES:
        raise ConfigError(
            f"logger.mode must be one of {', '.join(LOGGER_MODES)} (or null: WANDB_MODE "
            f"decides), got {mode!r}."
        )
