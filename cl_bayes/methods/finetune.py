"""Fine-tuning: train on each task in turn with nothing to protect earlier tasks.

The lower bound of continual learning: it keeps nothing between tasks except the network
weights themselves, so later tasks overwrite earlier ones (catastrophic forgetting).
"""

from cl_bayes.methods.base import Method


class Finetune(Method):
    """Plain sequential training on the current task only."""

    # Cross-entropy, zero_grad, backward, step: no host sync, no branch on a tensor.
    capturable_step = True
