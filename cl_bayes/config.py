"""Configuration: the ``task=`` group read from ``tasks/``, and checks before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra.utils
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from cl_bayes.bayes.layer import SAMPLING
from cl_bayes.errors import ConfigError, UserError
from cl_bayes.models.bayes_cnn import check_conv_options
from cl_bayes.scenario import Scenario

REPO_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = REPO_ROOT / "conf"
TASKS_DIR = REPO_ROOT / "tasks"


def register_task_sequences(tasks_dir: Path = TASKS_DIR) -> list[str]:
    """Make every ``tasks/<name>.yaml`` selectable as ``task=<name>``; returns the names.

    Task sequences live in the top-level ``tasks/`` folder rather than ``conf/task/``, so
    they are registered with Hydra's config store under the group ``task``.
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


def _positive(value, name: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        hint = " or null" if allow_null else ""
        raise ConfigError(f"{name} must be a positive number{hint}, got {value!r}.")


def check_config(cfg: DictConfig) -> None:
    """Raise one clear :class:`ConfigError` for a value that cannot work, before any work."""
    Scenario.parse(cfg.scenario)
    _positive(cfg.train.epochs, "train.epochs")
    if not isinstance(cfg.train.epochs, int):
        raise ConfigError(f"train.epochs must be a whole number, got {cfg.train.epochs!r}.")
    _positive(cfg.train.batch_size, "train.batch_size (null = full batch)", allow_null=True)
    if "lr" in cfg.optimizer:
        _positive(cfg.optimizer.lr, "optimizer.lr")
    if "hidden_sizes" in cfg.model:
        sizes = cfg.model.hidden_sizes
        # A CNN may go straight from its convolutions to the heads; an MLP needs a layer.
        empty_ok = "conv_channels" in cfg.model and sizes is not None
        if (not sizes and not empty_ok) or any(not isinstance(h, int) or h < 1 for h in sizes):
            what = "positive widths (or none)" if empty_ok else "at least one positive width"
            raise ConfigError(
                f"model.hidden_sizes must list {what}, e.g. [256,256]; "
                f"got {OmegaConf.to_container(sizes) if sizes is not None else None}."
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
    if cfg.evaluate_on not in ("test", "val"):
        raise ConfigError(f"evaluate_on must be 'test' or 'val', got {cfg.evaluate_on!r}.")
    if cfg.evaluate_on == "val" and not cfg.task.get("val_fraction"):
        raise ConfigError("evaluate_on=val needs a validation split: set task.val_fraction > 0.")
    device = str(cfg.device)
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {device!r}.")
