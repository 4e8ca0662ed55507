"""Variational Continual Learning (Nguyen, Li, Bui & Turner, ICLR 2018).

A mean-field Gaussian Bayesian network is trained on each task by minimising the negative
ELBO ``nll + beta * kl / N_t``, where ``kl = KL(q_t || q_{t-1})`` is taken against the
posterior after the previous task (the first prior is ``N(0, prior_var)``) and ``N_t`` is
the task's number of training examples once its coreset is removed. ``beta`` is GVCL's KL
tempering (Loo, Swaroop & Turner 2021); 1 is VCL.

Kept between tasks: the posterior after each task, copied into the model's prior buffers
(so checkpoints restore it exactly and the optimiser never sees it), and, with coresets,
each task's coreset as an index tensor into that task's training set. At prediction time a
copy of the current posterior is fine-tuned on the coresets (all of them merged for a
shared head; each task's own for its head) and that copy predicts; the copy is never
propagated to the next task.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cl_bayes.coresets import k_center_coreset, random_coreset
from cl_bayes.cuda_graphs import build_optimizer, replayable
from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import Method
from cl_bayes.training import fit, plain_step

CORESET_METHODS = ("random", "k_center")
STARTS = ("posterior", "fresh")


class VCL(Method):
    """Variational Continual Learning with optional random or k-center coresets.

    Parameters
    ----------
    epochs, batch_size, optimizer, steps
        Schedule of the first task's maximum-likelihood start and of coreset fine-tuning
        (the run's own schedule; ``batch_size=None`` is full batch; ``optimizer`` is a
        partial taking the parameters; ``steps``, where set, counts optimisation steps
        instead of epochs, as ``train.steps`` does).
    beta
        Weight of the KL term (1 = VCL; < 1 = GVCL's tempered posterior).
    train_samples, predict_samples
        Monte Carlo samples per training step (10 in the paper) and at prediction (100),
        where the class probabilities are averaged before the argmax.
    coreset_size
        Coreset examples per task (0 = none; 40 for Split MNIST, 200 for Permuted MNIST).
    coreset_method
        ``random`` or ``k_center`` (greedy farthest point in input space, deterministic).
    ml_init
        Start the first task's posterior means from a network trained by maximum
        likelihood on that task (same schedule), as in the paper.
    start_from
        ``posterior``: each task starts from the previous posterior (original VCL);
        ``fresh``: means and variances are re-initialised each task ("improved VCL",
        Swaroop et al. 2019); the prior is the previous posterior either way.
    progress
        Show progress bars for the maximum-likelihood start and coreset fine-tuning.
    """

    # The negative ELBO's step never waits for the device: its noise comes from the default
    # generator, its KL from buffers fixed for the task (the prior and its cached precision),
    # and ``n_train`` and the heads are Python values fixed for the task. Its own phases (the
    # maximum-likelihood start, coreset tuning) replay graphs too where the run does
    # (``Method.cuda_graph``).
    capturable_step = True

    def __init__(
        self,
        epochs: int,
        batch_size: int | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        beta: float = 1.0,
        train_samples: int = 10,
        predict_samples: int = 100,
        coreset_size: int = 0,
        coreset_method: str = "random",
        ml_init: bool = True,
        start_from: str = "posterior",
        progress: bool = True,
        steps: int | None = None,
    ):
        if coreset_method not in CORESET_METHODS:
            raise ConfigError(
                f"method.coreset_method must be one of {', '.join(CORESET_METHODS)}, "
                f"got {coreset_method!r}."
            )
        if start_from not in STARTS:
            raise ConfigError(
                f"method.start_from must be one of {', '.join(STARTS)}, got {start_from!r}."
            )
        if train_samples < 1 or predict_samples < 1:
            raise ConfigError("method.train_samples and method.predict_samples must be at least 1.")
        if coreset_size < 0 or beta < 0:
            raise ConfigError("method.coreset_size and method.beta must not be negative.")
        self.epochs, self.batch_size, self.optimizer = epochs, batch_size, optimizer
        self.beta = beta
        self.train_samples, self.predict_samples = train_samples, predict_samples
        self.coreset_size, self.coreset_method = coreset_size, coreset_method
        self.ml_init, self.start_from, self.progress = ml_init, start_from, progress
        self.restarts_model = start_from == "fresh"
        self.steps = steps
        self.coreset_index: dict[int, Tensor] = {}
        self.seen_heads: list[int] = []
        self._train_sets: Sequence[LabelledData] = ()
        self._n_train = 1
        self._predictors: dict[int, nn.Module] = {}
        # Coreset-tuned copies restored from a checkpoint, built on first use (a copy of the
        # model with these parameters and buffers).
        self._predictor_states: dict[int, dict[str, Tensor]] = {}

    # -- the method interface -------------------------------------------------------------
    def training_data(self, task_id: int, seen: Sequence[LabelledData]) -> LabelledData:
        """Task ``task_id``'s training set without its coreset (which is selected here)."""
        self._train_sets = seen
        data = seen[task_id]
        if not self.coreset_size:
            return data
        if self.coreset_method == "k_center":
            index = k_center_coreset(data.x, self.coreset_size)
        else:
            index = random_coreset(len(data), self.coreset_size, data.y.device)
        self.coreset_index[task_id] = index
        keep = torch.ones(len(data), dtype=torch.bool, device=data.y.device)
        keep[index] = False
        return data.subset(keep.nonzero().squeeze(1))

    def before_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Give new heads a fresh posterior and prior; on task 1, the maximum-likelihood start."""
        if not hasattr(model, "kl"):
            raise ConfigError(
                f"method=vcl needs a Bayesian model (model=bayes_mlp or model=bayes_cnn), "
                f"got {type(model).__name__}."
            )
        self._n_train = max(len(data), 1)
        heads = [data.head] if isinstance(data.head, int) else data.head.unique().tolist()
        if self.start_from == "fresh" and self.seen_heads:
            for layer in model.layers(self.seen_heads):
                layer.reset_parameters()
        for head in heads:
            if head not in self.seen_heads:  # a new head: fresh posterior, prior N(0, prior_var)
                model.heads[head].reset_parameters()
                model.heads[head].reset_prior()
                self.seen_heads.append(head)
        if task_id == 0 and self.ml_init:
            self._fit(model, self._train_sets[task_id], Method().loss, "task 1 maximum likelihood")

    def loss(self, model: nn.Module, batch: LabelledData) -> Tensor:
        """Negative ELBO per example: ``nll + beta * kl / N_t`` (a scalar)."""
        return self.neg_elbo(model, batch, self._n_train)

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Posterior becomes prior; with coresets, fine-tune the copies that predict."""
        for layer in model.layers(self.seen_heads):
            layer.posterior_to_prior()
        self._use_predictors(self._tune_on_coresets(model, task_id) if self.coreset_index else {})

    @torch.no_grad()
    def predict(self, model: nn.Module, data: LabelledData, samples: bool = False) -> Tensor:
        """Log of the Monte Carlo predictive ``(batch, n_outputs)``.

        The class probabilities are averaged over ``predict_samples`` weight draws, then the
        log is taken: ``log (1/S) sum_s softmax(f(x; w_s))``. With ``samples=True``, each
        draw's log-probabilities, ``(predict_samples, batch, n_outputs)``.
        """
        if isinstance(data.head, int):
            model = self._predictor(model, data.head)
        if samples:
            return torch.cat(
                [
                    model(data.x, data.head, k)[..., : data.n_outputs].log_softmax(dim=-1)
                    for k in _chunks(self.predict_samples, 10)
                ]
            )
        probabilities = torch.zeros(len(data), data.n_outputs, device=data.y.device)
        for k in _chunks(self.predict_samples, 10):
            scores = model(data.x, data.head, k)[..., : data.n_outputs]
            probabilities += scores.softmax(dim=-1).sum(dim=0)
        return (probabilities / self.predict_samples).log()

    def state_dict(self) -> dict[str, Any]:
        """Coreset indices, the heads trained so far and the coreset-tuned copies that predict.

        The priors live in the model. The copies are kept as their ``state_dict`` (``head ->
        parameters and buffers``), so predictions after loading are those before saving.
        """
        predictors = {head: tuned.state_dict() for head, tuned in self._predictors.items()}
        return {
            "coreset_index": dict(self.coreset_index),
            "seen_heads": list(self.seen_heads),
            "predictors": {**self._predictor_states, **predictors},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned.

        A checkpoint written without the tuned copies predicts with the posterior until the
        next task's coresets are tuned.
        """
        self.coreset_index = dict(state["coreset_index"])
        self.seen_heads = list(state["seen_heads"])
        self._predictors = {}
        self._predictor_states = dict(state.get("predictors", {}))

    @torch.no_grad()
    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """The KL part of the current task's negative ELBO, logged after every epoch.

        ``kl``: ``KL(q || prior)`` over the body and the heads trained so far (nats), at the
        current posterior; ``kl_term``: ``beta * kl / N_t``, its share of the loss.
        """
        kl = float(model.kl(self.seen_heads))
        return {"kl": kl, "kl_term": self.beta * kl / self._n_train}

    # -- VCL's own pieces ------------------------------------------------------------------

    def neg_elbo(self, model: nn.Module, batch: LabelledData, n_train: int) -> Tensor:
        """``nll + beta * kl / n_train``: nll averaged over samples and examples."""
        sampled = model(batch.x, batch.head, self.train_samples)[..., : batch.n_outputs]
        nll = F.cross_entropy(sampled.flatten(0, 1), batch.y.repeat(self.train_samples))
        return nll + self.beta * model.kl(self.seen_heads) / n_train

    def coreset(self, task_id: int) -> LabelledData:
        """Task ``task_id``'s coreset examples."""
        return self._train_sets[task_id].subset(self.coreset_index[task_id])

    def _use_predictors(self, predictors: dict[int, nn.Module]) -> None:
        """Predict with ``predictors`` (``head -> network``) from now on, not with older ones."""
        self._predictors, self._predictor_states = predictors, {}

    def _predictor(self, model: nn.Module, head: int) -> nn.Module:
        """The network that predicts for ``head``: its coreset-tuned copy, else ``model``."""
        if head in self._predictor_states:
            restored = copy.deepcopy(model)
            restored.load_state_dict(self._predictor_states.pop(head))
            self._predictors[head] = restored.eval()
        return self._predictors.get(head, model)

    def _tune_on_coresets(self, model: nn.Module, task_id: int) -> dict[int, nn.Module]:
        """One fine-tuned copy per head, trained on the coresets of that head's tasks.

        The copy's prior is the current posterior (``after_task`` has just copied it), so it
        minimises ``nll + beta * KL(q || current posterior) / coreset size``.
        """
        by_head: dict[int, list[LabelledData]] = {}
        for t in sorted(self.coreset_index):
            part = self.coreset(t)
            by_head.setdefault(part.head if isinstance(part.head, int) else -1, []).append(part)
        predictors = {}
        for head, parts in by_head.items():
            coresets = LabelledData.concat(parts)
            tuned = copy.deepcopy(model)
            loss = partial(self.neg_elbo, n_train=len(coresets))
            self._fit(tuned, coresets, loss, f"coreset tuning, head {head}")
            tuned.eval()
            predictors[head] = tuned
        return predictors

    def _fit(self, model: nn.Module, data: LabelledData, loss, label: str) -> None:
        """Train ``model`` on ``data`` by ``loss``: a phase of VCL's own, on a fresh optimiser.

        Replayed from a CUDA graph where the run's training steps are (``cuda_graph``) and
        the phase allows it (:func:`~cl_bayes.cuda_graphs.replayable`).
        """
        captured = self.cuda_graph and replayable(data, self.optimizer, label)
        optimizer = build_optimizer(self.optimizer, model.parameters(), captured)
        step = partial(plain_step, loss)
        fit(
            model,
            data,
            step,
            optimizer,
            self.epochs,
            self.batch_size,
            label,
            self.progress,
            steps=self.steps,
            cuda_graph=captured,
        )


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]
