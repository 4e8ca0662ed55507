"""Experiment trackers (the ``logger=`` group): ``base.Logger`` logs nothing, ``wandb`` W&B."""
