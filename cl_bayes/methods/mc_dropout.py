"""Monte Carlo dropout (Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016).

A network trained with dropout is a variational approximation to a Bayesian network: each
dropout mask is a draw of the weights from the approximate posterior. Training is plain
cross-entropy with dropout on, task after task as in fine-tuning; at prediction dropout stays
on and the class probabilities are averaged over ``T`` stochastic passes,
``p(y | x) ≈ (1/T) sum_t softmax(f(x; mask_t))``. The cheapest Bayesian approximation here,
the baseline of VCL in the calibration comparison.

Kept between tasks: nothing but the network weights (as in fine-tuning).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method
from cl_bayes.models.mlp import route_heads

# Stochastic passes computed together: bounds the (passes, batch, hidden) activations
# (10 x 10,000 examples x 256 units is 100 MB in float32), as VCL bounds its samples.
PASSES_PER_CHUNK = 10


class MCDropout(Method):
    """Sequential training with dropout; prediction averages ``T`` dropout passes.

    Needs a network with dropout (``model=dropout_mlp``, which ``method=mc_dropout``
    selects): a :class:`~cl_bayes.models.mlp.MLP` whose ``body`` runs its layers in order
    (the ReLU-and-dropout pairs opened up) before its ``heads``.

    Parameters
    ----------
    predict_samples
        ``T``, the number of stochastic forward passes averaged at prediction. The default,
        10, keeps the evaluation after every task cheap; Gal & Ghahramani (2016) use 100,
        which final figures may set.
    """

    # The default step; the dropout masks come from torch's default CUDA generator, whose
    # offset every replay advances (fresh masks at every step, as eagerly).
    capturable_step = True

    def __init__(self, predict_samples: int = 10):
        if (
            isinstance(predict_samples, bool)
            or not isinstance(predict_samples, int)
            or predict_samples < 1
        ):
            raise ConfigError(
                f"method.predict_samples must be a whole number >= 1, got {predict_samples!r}."
            )
        self.predict_samples = predict_samples

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Refuse a network without dropout before any training is spent on it."""
        split_at_first_dropout(model)

    @torch.no_grad()
    def predict(self, model: nn.Module, data: LabelledData, samples: bool = False) -> Tensor:
        """Log of the MC dropout predictive ``(batch, n_outputs)``.

        ``log (1/T) sum_t softmax(f(x; mask_t))`` over ``T = predict_samples`` independent
        dropout masks, drawn even though the evaluation puts the model in eval mode (the
        model's mode is left as it was). With ``samples=True``, each pass's
        log-probabilities, ``(T, batch, n_outputs)``.
        """
        if samples:
            return torch.cat([scores.log_softmax(dim=-1) for scores in self.passes(model, data)])
        probabilities = torch.zeros(len(data), data.n_outputs, device=data.y.device)
        for scores in self.passes(model, data):
            probabilities += scores.softmax(dim=-1).sum(dim=0)
        return (probabilities / self.predict_samples).log()

    def passes(self, model: nn.Module, data: LabelledData) -> Iterator[Tensor]:
        """Scores of the ``T`` dropout passes over the active outputs, a chunk at a time.

        Yields ``(passes, batch, n_outputs)`` tensors, at most :data:`PASSES_PER_CHUNK` passes
        each, ``T`` in all. The layers before the first dropout see the same input in every
        pass, so they run once for the batch; their output is expanded to
        ``(passes, batch, hidden)``, each pass gets its own masks, and the remaining layers
        and the heads run on all the passes at once.
        """
        layers, start = split_at_first_dropout(model)
        shared = data.x
        for layer in layers[:start]:
            shared = layer(shared)
        for first in range(0, self.predict_samples, PASSES_PER_CHUNK):
            n_passes = min(PASSES_PER_CHUNK, self.predict_samples - first)
            h = shared.expand(n_passes, *shared.shape)
            for layer in layers[start:]:
                if isinstance(layer, nn.Dropout):
                    h = F.dropout(h, layer.p, training=True)  # on, whatever the model's mode
                else:
                    h = layer(h)
            yield route_heads(model.heads, h, data.head)[..., : data.n_outputs]


def split_at_first_dropout(model: nn.Module) -> tuple[list[nn.Module], int]:
    """The layers ``model.body`` applies, in order, and the position of the first dropout.

    Nested ``Sequential`` blocks (the MLP's ReLU-and-dropout pairs) are opened up. Raises
    :class:`ConfigError` for a network without dropout layers (a Bayesian network, say),
    whose passes would all be the same: the method never turns silently into a
    deterministic one. Dropout layers of rate 0, where every pass agrees, are allowed.
    """
    body = getattr(model, "body", None)
    if isinstance(body, nn.Sequential):
        layers = [module for module in body.modules() if not isinstance(module, nn.Sequential)]
        for position, layer in enumerate(layers):
            if isinstance(layer, nn.Dropout):
                return layers, position
    raise ConfigError(
        f"method=mc_dropout needs a network with dropout layers: use model=dropout_mlp "
        f"(got {type(model).__name__}, which has none)."
    )
