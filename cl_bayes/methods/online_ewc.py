"""Online EWC (Schwarz et al., ICML 2018).

Schwarz, Luketina, Czarnecki, Grabska-Barwinska, Teh, Pascanu & Hadsell, "Progress &
Compress: A scalable framework for continual learning", ICML 2018.

Instead of one penalty per past task (:mod:`cl_bayes.methods.ewc`), one running Fisher
``F <- decay * F + F_t`` is kept, with ``F_t`` task ``t``'s diagonal Fisher computed exactly
as EWC's (per example, ``expected`` or ``empirical``), and one anchor: the parameters after the
latest task. Later tasks train on cross-entropy plus ``(lambda / 2) sum F (theta - theta*)^2``
over the body and the heads of the tasks trained so far (the current task's new head is not
penalised).

Kept between tasks: the running Fisher, the anchor and the heads trained so far.
"""

from __future__ import annotations

from torch import nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.ewc import check_fisher_options, fisher_information
from cl_bayes.methods.quadratic import (
    QuadraticPenalty,
    check_weight,
    heads_of,
    snapshot,
    trained_parameters,
)


class OnlineEWC(QuadraticPenalty):
    """Online EWC: one running Fisher with decay ``gamma`` and the latest parameters as anchor.

    The running Fisher is the penalty's importance (:attr:`importance`).

    Parameters
    ----------
    penalty_weight
        ``lambda`` in Schwarz et al. (2018): the penalty is ``(lambda / 2) sum F (theta -
        theta*)^2``.
    decay
        ``gamma`` in Schwarz et al. (2018), in [0, 1]: the running Fisher becomes ``gamma * F
        + F_t`` (1 adds the Fishers up; 0 keeps only the latest task's).
    fisher, fisher_samples
        As for :class:`~cl_bayes.methods.ewc.EWC`.
    """

    def __init__(
        self,
        penalty_weight: float = 100.0,
        decay: float = 1.0,
        fisher: str = "expected",
        fisher_samples: int | None = None,
    ):
        penalty_weight = check_weight(penalty_weight)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise ConfigError(f"method.decay must be a number in [0, 1], got {decay!r}.")
        check_fisher_options(fisher, fisher_samples)
        super().__init__(scale=penalty_weight / 2)
        self.penalty_weight, self.decay = penalty_weight, float(decay)
        self.fisher_type, self.fisher_samples = fisher, fisher_samples

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """``F <- decay * F + F_t``; the anchor becomes a copy of the current parameters."""
        params = trained_parameters(model, self.seen_heads + heads_of(data))
        fisher = fisher_information(model, data, params, self.fisher_type, self.fisher_samples)
        for name, running in self.importance.items():
            fisher[name] = self.decay * running + fisher[name]
        self.seen_heads = sorted(set(self.seen_heads) | set(heads_of(data)))
        self.set_penalty(fisher, snapshot(trained_parameters(model, self.seen_heads)))
