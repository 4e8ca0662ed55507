"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017).

Kirkpatrick, Pascanu, Rabinowitz, Veness, Desjardins, Rusu, Milan, Quan, Ramalho,
Grabska-Barwinska, Hassabis, Clopath, Kumaran & Hadsell, "Overcoming catastrophic forgetting
in neural networks", PNAS 2017.

After each task ``t`` the diagonal Fisher information ``F_t`` is computed at the task's final
parameters ``theta*_t``, and every later task trains on its cross-entropy plus one penalty per
past task, ``(lambda / 2) * sum_t sum_i F_t,i * (theta_i - theta*_t,i)^2``.

The Fisher is the mean over the task's training examples (or ``fisher_samples`` of them,
drawn at random) of *per-example* squared gradients, never the square of a batch-mean
gradient, computed in training mode with gradients enabled:

- ``fisher: expected`` (the Fisher information itself): ``sum_k p(k|x) (d log p(k|x))^2``,
  summed exactly over the active outputs ``k`` with ``p`` the model's own prediction. Exact
  rather than sampled (``k ~ p(.|x)``), so it carries no sampling noise and draws no random
  numbers; the price is one backward pass per active output (2 on Split MNIST task- or
  domain-incremental, up to the number of classes class-incremental), batched into one call
  and going no further than the layers' outputs, paid once per task.
- ``fisher: empirical``: ``(d log p(y|x))^2`` at the true label ``y``; one backward pass.

In task-incremental learning task ``t``'s Fisher comes from head ``t``, so the other heads'
entries are zero for that task. Penalised are the body and the heads of the tasks trained so
far; the head of the task being trained is new and unpenalised.

Kept between tasks: every past task's Fisher and anchor (``fisher``, ``anchors``: one
``name -> tensor`` dict per task) and the heads trained so far. The per-task penalties are
summed into one quadratic with the same value and gradient (see :func:`merge_quadratics`), so
a step costs the same after 2 tasks as after 20.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.base import logits
from cl_bayes.methods.quadratic import (
    QuadraticPenalty,
    check_weight,
    heads_of,
    snapshot,
    trained_parameters,
)

FISHER_TYPES = ("expected", "empirical")

# objective(logits (batch, n_outputs), targets (batch,)) -> (outputs, weights), both
# (batch, K): the per-example quantities to differentiate and the weight of each one
# (None: all 1).
Objective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor | None]]


def empirical_fisher_objective(z: Tensor, y: Tensor) -> tuple[Tensor, None]:
    """``log p(y | x)`` at the true label, ``(batch, 1)``, unweighted."""
    return z.log_softmax(dim=-1).gather(1, y[:, None]), None


def expected_fisher_objective(z: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """``log p(k | x)`` for every active output ``k``, weighted by ``p(k | x)``: ``(batch, K)``."""
    out = z.log_softmax(dim=-1)
    return out, out.detach().exp()


class EWC(QuadraticPenalty):
    """Elastic Weight Consolidation: one Fisher-weighted quadratic penalty per past task.

    Parameters
    ----------
    penalty_weight
        ``lambda`` in Kirkpatrick et al. (2017): the penalty is ``(lambda / 2) sum F (theta -
        theta*)^2``.
    fisher
        ``expected`` (the Fisher information, summed exactly over the active outputs) or
        ``empirical`` (squared gradients of the true label's log-likelihood).
    fisher_samples
        Training examples of the task to average the Fisher over, drawn without replacement
        from torch's global generator; ``None`` uses them all.
    """

    def __init__(
        self,
        penalty_weight: float = 100.0,
        fisher: str = "expected",
        fisher_samples: int | None = None,
    ):
        penalty_weight = check_weight(penalty_weight)
        check_fisher_options(fisher, fisher_samples)
        super().__init__(scale=penalty_weight / 2)
        self.penalty_weight = penalty_weight
        self.fisher_type, self.fisher_samples = fisher, fisher_samples
        self.fisher: list[dict[str, Tensor]] = []
        self.anchors: list[dict[str, Tensor]] = []

    def after_task(self, model: nn.Module, task_id: int, data: LabelledData) -> None:
        """Compute the task's Fisher, keep it with a copy of the parameters, update the penalty."""
        params = trained_parameters(model, self.seen_heads + heads_of(data))
        fisher = fisher_information(model, data, params, self.fisher_type, self.fisher_samples)
        self.seen_heads = sorted(set(self.seen_heads) | set(heads_of(data)))
        self.fisher.append(fisher)
        self.anchors.append(snapshot(trained_parameters(model, self.seen_heads)))
        self.set_penalty(*merge_quadratics(self.fisher, self.anchors))

    def state_dict(self) -> dict[str, Any]:
        """Every past task's Fisher and anchor, and the heads trained so far."""
        return {
            "fisher": [dict(f) for f in self.fisher],
            "anchors": [dict(a) for a in self.anchors],
            "seen_heads": list(self.seen_heads),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (the merged penalty is rebuilt from it)."""
        self.fisher = [dict(f) for f in state["fisher"]]
        self.anchors = [dict(a) for a in state["anchors"]]
        self.seen_heads = list(state["seen_heads"])
        if self.fisher:
            self.set_penalty(*merge_quadratics(self.fisher, self.anchors))
        else:
            self.set_penalty({}, {})


def check_fisher_options(fisher: str, fisher_samples: int | None) -> None:
    """A :class:`ConfigError` naming the key unless both are valid."""
    if fisher not in FISHER_TYPES:
        raise ConfigError(
            f"method.fisher must be one of {', '.join(FISHER_TYPES)}, got {fisher!r}."
        )
    if fisher_samples is not None and (
        isinstance(fisher_samples, bool)
        or not isinstance(fisher_samples, int)
        or fisher_samples < 1
    ):
        raise ConfigError(
            f"method.fisher_samples must be a positive integer or null (all examples), "
            f"got {fisher_samples!r}."
        )


def fisher_information(
    model: nn.Module,
    data: LabelledData,
    params: dict[str, nn.Parameter],
    fisher: str = "expected",
    samples: int | None = None,
) -> dict[str, Tensor]:
    """Diagonal Fisher of ``params`` on ``data`` at the model's parameters.

    The mean over ``data``'s examples (``samples`` of them drawn at random, or all) of the
    per-example squared gradients: ``sum_k p(k|x) (d log p(k|x))^2`` (``expected``) or
    ``(d log p(y|x))^2`` (``empirical``). Returns ``name -> tensor`` shaped like the
    parameter; a parameter ``data`` does not reach (another task's head) gets zeros.
    """
    data = sample_examples(data, samples)
    objective = expected_fisher_objective if fisher == "expected" else empirical_fisher_objective
    sums = per_example_gradient_sums(model, data, objective, power=2, params=params)
    return {name: s / max(len(data), 1) for name, s in sums.items()}


def merge_quadratics(
    importances: list[dict[str, Tensor]], anchors: list[dict[str, Tensor]]
) -> tuple[dict[str, Tensor], dict[str, Tensor], float]:
    """One quadratic equal to ``sum_t sum_i w_t,i (theta_i - a_t,i)^2`` at every ``theta``.

    ``sum_t w_t (theta - a_t)^2 = W (theta - m)^2 + C`` with ``W = sum_t w_t``, ``m = sum_t
    w_t a_t / W`` (the last anchor where ``W = 0``) and ``C = sum_t w_t (a_t - m)^2 >= 0``, a
    constant: the same value and gradient, with one term per parameter instead of one per
    task. Returns ``(W, m, C)`` over the union of the dicts' keys (a missing entry weighs 0).
    """
    total, mean = {}, {}
    for name, last in anchors[-1].items():
        parts = [(w[name], a[name]) for w, a in zip(importances, anchors, strict=True) if name in w]
        if len(parts) == 1:  # exactly zero at a single anchor
            total[name], mean[name] = parts[0]
            continue
        weight = sum(w for w, _ in parts)
        weighted = sum(w * a for w, a in parts)
        total[name] = weight
        mean[name] = torch.where(weight > 0, weighted / weight.clamp_min(1e-30), last)
    constant = sum(
        float((w[name] * (a[name] - mean[name]).square()).sum())
        for w, a in zip(importances, anchors, strict=True)
        for name in w
    )
    return total, mean, constant


def sample_examples(data: LabelledData, n: int | None) -> LabelledData:
    """``n`` examples of ``data`` drawn without replacement (torch's generator); all if ``None``."""
    if n is None or n >= len(data):
        return data
    return data.subset(torch.randperm(len(data), device=data.y.device)[:n])


def per_example_gradient_sums(
    model: nn.Module,
    data: LabelledData,
    objective: Objective,
    power: int,
    params: dict[str, nn.Parameter],
    chunk_size: int = 4096,
) -> dict[str, Tensor]:
    """``sum_n sum_k w_nk |d out_nk / d theta|^power`` for each of ``params``, per example.

    ``out, w = objective(logits, y)`` over the active outputs, both ``(batch, K)`` (``w``
    ``None``: all 1); ``power`` is 1 or 2. The gradient of each example's own output is
    taken (not of a batch mean), in training mode with gradients enabled whatever the
    caller's mode. Models built from ``nn.Linear``
    layers take an exact shortcut: an example's gradient of a linear layer's weight is the
    outer product ``g a^T`` of the gradient at the layer's output and its input, so
    ``sum_n |g_n a_n^T|^p = |G|^p^T |A|^p``, one matrix product per layer instead of a
    ``(batch, out, in)`` tensor of per-example gradients. Any other model goes through
    ``torch.func``: ``vmap`` over examples of ``jacrev`` of ``functional_call``.

    Returns ``name -> tensor`` shaped like the parameter.
    """
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad():
            sums = {name: torch.zeros_like(p) for name, p in params.items()}
            linear = _linear_layers(model)
            for head in heads_of(data) if len(data) else []:
                part = data if isinstance(data.head, int) else data.subset(data.head == head)
                part = LabelledData(part.x, part.y, head, part.n_outputs)
                for start in range(0, len(part), chunk_size):
                    index = torch.arange(
                        start, min(start + chunk_size, len(part)), device=part.y.device
                    )
                    chunk = part.subset(index)
                    if linear is None or not _linear_sums(
                        model, chunk, objective, power, linear, sums
                    ):
                        _vmap_sums(model, chunk, objective, power, params, sums)
            return sums
    finally:
        model.train(was_training)


def _linear_layers(model: nn.Module) -> dict[nn.Linear, tuple[str, str | None]] | None:
    """``layer -> (weight name, bias name)`` when every parameter belongs to an ``nn.Linear``."""
    names = {id(p): name for name, p in model.named_parameters()}
    layers = {}
    for module in model.modules():
        if type(module) is nn.Linear:  # a subclass may compute something else
            bias = None if module.bias is None else names.pop(id(module.bias))
            layers[module] = (names.pop(id(module.weight)), bias)
    return layers if not names else None


def _linear_sums(model, chunk, objective, power, layers, sums) -> bool:
    """Add the chunk's sums through the outer-product shortcut; False if it does not apply."""
    seen: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {}

    def keep(module, args, output):
        seen.setdefault(module, []).append((args[0], output))

    handles = [layer.register_forward_hook(keep) for layer in layers]
    try:
        out, weight = objective(logits(model, chunk), chunk.y)
    finally:
        for handle in handles:
            handle.remove()
    calls = [(layer, *c[0]) for layer, c in seen.items()]
    # One call per layer on (batch, features) inputs: else the per-example gradient is no
    # longer one outer product.
    if any(len(c) > 1 or c[0][0].ndim != 2 for c in seen.values()):
        return False
    if not calls:
        return True
    k = out.shape[1]
    if k == 1:
        grads = torch.autograd.grad(out.sum(), [o for _, _, o in calls], allow_unused=True)
        grads = [None if g is None else g[None] for g in grads]  # (1, batch, out)
    else:
        basis = torch.eye(k, dtype=out.dtype, device=out.device)[:, None, :].expand(
            -1, len(out), -1
        )
        grads = torch.autograd.grad(
            out, [o for _, _, o in calls], basis, allow_unused=True, is_grads_batched=True
        )
    for (layer, a, _), g in zip(calls, grads, strict=True):
        if g is None:  # a layer the outputs do not depend on
            continue
        g = _power(g.detach(), power, inplace=True)  # (K, batch, out), a fresh tensor
        g = g.sum(0) if weight is None else torch.einsum("bk,kbo->bo", weight.detach(), g)
        weight_name, bias_name = layers[layer]
        if weight_name in sums:
            sums[weight_name] += g.T @ _power(a.detach(), power)
        if bias_name in sums:
            sums[bias_name] += g.sum(0)
    return True


def _power(t: Tensor, power: int, inplace: bool = False) -> Tensor:
    """``|t|^power`` for ``power`` 1 or 2."""
    if power == 2:
        return t.square_() if inplace else t.square()
    return t.abs_() if inplace else t.abs()


def _vmap_sums(model, chunk, objective, power, params, sums) -> None:
    """Add the chunk's sums from per-example Jacobians (``torch.func``)."""
    detached = {name: p.detach() for name, p in params.items()}
    head, n_outputs = chunk.head, chunk.n_outputs

    def outputs(p, x, y):
        # tie_weights=False: with True, a module registered under two names (an alias) comes
        # back holding plain tensors instead of its parameters.
        z = functional_call(model, p, (x[None], head), tie_weights=False)[:, :n_outputs]
        out, weight = objective(z, y[None])
        weight = torch.ones_like(out) if weight is None else weight
        return out[0], weight[0].detach()

    def example(x, y):
        jac, weight = jacrev(outputs, has_aux=True)(detached, x, y)
        return {
            name: torch.einsum("k,k...->...", weight, _power(g, power)) for name, g in jac.items()
        }

    # Memory: one (chunk, K, n_parameters) Jacobian at a time.
    n_params = sum(p.numel() for p in params.values())
    step = max(1, 2**24 // max(n_params * n_outputs, 1))
    for start in range(0, len(chunk), step):
        x, y = chunk.x[start : start + step], chunk.y[start : start + step]
        for name, s in vmap(example)(x, y).items():
            sums[name] += s.sum(0)
