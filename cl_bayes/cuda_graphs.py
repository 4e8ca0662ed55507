"""CUDA graphs for the training step: captured once per training phase, then replayed.

A training step of the suite's small networks is launch-bound on a GPU: hundreds of small
kernels, each costing more to launch than to run. Captured once with :class:`torch.cuda.graph`
and replayed, the whole step is launched at once. ``train.cuda_graphs`` (``auto``, ``true``,
``false``) asks for it; :func:`use_cuda_graphs` decides, once per run, and
:func:`cl_bayes.training.fit` replays the step through :class:`CapturedStep`.

A training phase (one ``fit`` call: one task) with a graph runs as follows.

- The step reads its batch from buffers that stay in place (:class:`StaticBatch`), of the
  batch size, refilled from the task's in-memory tensors by ``index_select`` before every
  step. A batch of the whole data (``train.batch_size`` null, or at least the data's size) is
  the task's own tensors, which do not move during the phase.
- The first :data:`WARMUP_STEPS` steps run eagerly on a side stream, as PyTorch asks before a
  capture. They are real steps on the phase's first batches, and they create the optimiser's
  state, which the graph then updates in place.
- The next step is captured (which runs nothing) and replayed; every later step is a refill
  and a replay. The step's loss is a tensor of the graph, cloned after each replay; nothing
  here reads it on the host (``fit`` does, once per epoch).
- The last batch of an epoch, smaller where the batch size does not divide the data, runs
  eagerly on the same optimiser: Adam with ``capturable=True`` keeps its step count on the
  device, and its eager steps read and advance that same count (torch's ``_single_tensor``
  and ``_multi_tensor`` Adam take the capturable path whether or not a capture is under way).

The optimiser is built with ``capturable=True`` where its class takes that option (Adam,
AdamW, RMSprop, ...). SGD has no such option and needs none: it keeps no step count, and the
momentum buffers it creates on its first step exist before the capture. Any other optimiser
trains eagerly. A phase whose examples are answered by several heads (joint training,
task-incremental) also trains eagerly: the network routes examples to heads with
``unique().tolist()``, which waits for the device. Evaluation stays eager: it runs once per
task over large chunks of data, where launches do not dominate (on an NVIDIA H200, VCL's
whole Permuted-MNIST run spent 0.9 s evaluating, 100 weight samples on 10 tasks after each
of 10 tasks, against 129.9 s training from graphs; ``results/gpu/``).

What is and is not bit-identical. On a CPU, ``tests/test_cuda_graphs.py`` runs every capturable
method through this path with a stand-in for the graph (the captured step run again on the
static batch) and gets exactly the eager run, with one capture per phase. On a GPU, these
tests, in their version comparing runs trained with Adam, captured every capturable method on
an NVIDIA H200 (``results/gpu/``):

- ``train.cuda_graphs=auto`` on a CPU is the eager loop itself: no graph, the same
  optimiser, the same random draws (tested).
- A run with graphs against the same run without: not bit-identical. Capturable Adam
  computes its bias corrections with tensor operations on the device instead of Python
  floats, and cuBLAS may choose other kernels (and so another order of summation) inside a
  capture. A captured step draws its random numbers (VCL's weights, MC dropout's masks) from
  the default CUDA generator at the offsets the eager step would use. On the H200, with
  Adam, the weights agreed within ``allclose(rtol=1e-3, atol=1e-4)`` for every capturable
  method but LwF in task-incremental runs, whose old head ended 1.7e-3 away: Adam turns the
  rounding-sized gradient an old head gets at a new task's first step into a step of about
  the learning rate, as an eager CPU run nudged by 1e-7 shows
  (``results/checks/rounding_sensitivity.py``). The tests therefore compare weights trained
  with SGD, which keeps a rounding a rounding: alone on the H200, every capturable method
  agreed within ``rtol=1e-4, atol=1e-5`` (two passes). Beside other jobs on the same GPU,
  the methods that draw random numbers in their step (VCL, coreset-only, MC dropout) have
  not always agreed, while every other method did (``results/gpu/README.md``, passes 1 and
  4). The cause is not known.
- Two runs with graphs, same seed and machine: the same kernels in the same order on the
  same batches, and every replay advances the default CUDA generator by the graph's total;
  so the same results, also across a resume (each phase warms up and captures afresh,
  exactly as in the uninterrupted run). On the H200, alone, the resumed runs' accuracy
  matrices equalled the uninterrupted ones exactly for every capturable method;
  whether two runs of a stochastic method agree beside other jobs has not been checked.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import Tensor, nn

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError

if TYPE_CHECKING:
    from cl_bayes.methods.base import Method

log = logging.getLogger(__name__)

# Eager steps before the capture: PyTorch's examples warm up with 3 (11 with DDP).
WARMUP_STEPS = 3
# torch warns once per optimiser that capturable=True slows uncaptured steps; the warm-up and
# the smaller last batch of each epoch run uncaptured on purpose.
UNCAPTURED_WARNING = "This instance was constructed with capturable=True"

StepFunction = Callable[[nn.Module, LabelledData, torch.optim.Optimizer], Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def check_setting(value: Any) -> None:
    """A one-line :class:`ConfigError` unless ``value`` is ``auto``, ``true`` or ``false``."""
    if value == "auto" or isinstance(value, bool):
        return
    raise ConfigError(f"train.cuda_graphs must be auto, true or false, got {value!r}.")


def asked_for(setting: Any, device: torch.device) -> bool:
    """Whether ``setting`` asks for graphs on ``device`` (``auto``: on CUDA devices only).

    ``true`` on a device other than CUDA is a :class:`ConfigError`: graphs exist only there,
    and a run asked to use them explicitly should not silently run without.
    """
    check_setting(setting)
    if device.type == "cuda":
        return setting is not False
    if setting is True:
        raise ConfigError(
            f"train.cuda_graphs=true needs a CUDA device, but this run's device is {device}: "
            f"use train.cuda_graphs=auto (on for CUDA devices only) or false."
        )
    return False


def use_cuda_graphs(setting: Any, device: torch.device, method: Method) -> bool:
    """Whether the run replays ``method``'s training step from CUDA graphs.

    Where ``setting`` asks for graphs on ``device`` (:func:`asked_for`) but the method does
    not declare its step capturable (``Method.capturable_step``), one info line says so and
    the run trains eagerly.
    """
    if not asked_for(setting, device):
        return False
    if not method.capturable_step:
        log.info(
            f"train.cuda_graphs: {type(method).__name__} does not declare its training step "
            f"capturable (capturable_step is False); training runs eagerly."
        )
        return False
    return True


def capture_options(make_optimizer: OptimizerFactory) -> dict[str, Any] | None:
    """The options that make ``make_optimizer``'s optimiser safe to capture, or ``None``.

    ``make_optimizer`` is the optimiser's class or a ``functools.partial`` of it (what a
    ``_partial_: true`` config instantiates to). ``{"capturable": True}`` where the class
    takes that option; ``{}`` for SGD; ``None`` for any other optimiser.
    """
    cls = _optimizer_class(make_optimizer)
    if not isinstance(cls, type):
        return None
    if "capturable" in inspect.signature(cls).parameters:
        return {"capturable": True}
    if issubclass(cls, torch.optim.SGD):
        return {}
    return None


def _optimizer_class(make_optimizer: OptimizerFactory) -> Any:
    return make_optimizer.func if isinstance(make_optimizer, functools.partial) else make_optimizer


def replayable(data: LabelledData, make_optimizer: OptimizerFactory, label: str) -> bool:
    """Whether a phase on ``data`` with this optimiser can be captured; if not, one info line."""
    if not isinstance(data.head, int):
        reason = "its examples are answered by several heads, which the network routes on the host"
    elif capture_options(make_optimizer) is None:
        name = getattr(_optimizer_class(make_optimizer), "__name__", repr(make_optimizer))
        reason = f"the optimiser {name} has no capturable mode"
    else:
        return True
    log.info(f"{label}: trained eagerly, not from a CUDA graph: {reason}.")
    return False


def build_optimizer(
    make_optimizer: OptimizerFactory, params: Iterable[nn.Parameter], captured: bool
) -> torch.optim.Optimizer:
    """``make_optimizer(params)``, with :func:`capture_options` where it will be captured."""
    options = capture_options(make_optimizer) if captured else None
    return make_optimizer(params, **(options or {}))


class StaticBatch:
    """A batch of ``size`` examples of ``data`` whose tensors stay where they are.

    A graph reads its inputs from the addresses it was captured with: ``x``, ``y``, ``index``
    (where ``data`` has one) and ``head`` (where it is a tensor; one head index stays an int)
    are buffers of ``size`` rows, refilled by :meth:`fill`. The filled batch holds the same
    values as ``data.subset(positions)``.
    """

    def __init__(self, data: LabelledData, size: int):
        self.data = data

        def buffer(t: Tensor) -> Tensor:
            return t.new_empty((size, *t.shape[1:]))

        head = data.head if isinstance(data.head, int) else buffer(data.head)
        index = None if data.index is None else buffer(data.index)
        self.batch = LabelledData(buffer(data.x), buffer(data.y), head, data.n_outputs, index)

    def fill(self, positions: Tensor) -> LabelledData:
        """Copy ``data``'s examples at ``positions`` ``(size,)`` into the buffers; the batch."""
        batch, data = self.batch, self.data
        torch.index_select(data.x, 0, positions, out=batch.x)
        torch.index_select(data.y, 0, positions, out=batch.y)
        if isinstance(batch.head, Tensor):
            torch.index_select(data.head, 0, positions, out=batch.head)
        if batch.index is not None:
            torch.index_select(data.index, 0, positions, out=batch.index)
        return batch


class CapturedStep:
    """``step(model, batch, optimizer)`` on batches of ``data``, replayed from a CUDA graph.

    Called with the positions of a batch in ``data`` (``None``: all of it), as ``fit`` draws
    them; returns the batch's detached loss, as ``step`` does. Batches of the full size are
    replayed after :data:`WARMUP_STEPS` eager warm-up steps and one capture; a smaller batch
    (the last of an epoch) runs eagerly. Constructing it touches no device: the stream, the
    graph and its memory pool come with the first step that needs them.
    """

    def __init__(
        self,
        step: StepFunction,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        data: LabelledData,
        batch_size: int | None,
    ):
        self.step, self.model, self.optimizer, self.data = step, model, optimizer, data
        self.size = min(batch_size or len(data), len(data))
        self.static = StaticBatch(data, self.size) if self.size < len(data) else None
        self.device = data.y.device
        self.warm_up_steps = 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.loss: Tensor | None = None  # the graph's output: the loss of its latest replay
        self._side_stream: torch.cuda.Stream | None = None

    def replays(self, positions: Tensor | None) -> bool:
        """Whether the batch at ``positions`` has the captured size (else it runs eagerly)."""
        return positions is None or len(positions) == self.size

    def batch(self, positions: Tensor | None) -> LabelledData:
        """The batch the step sees for ``positions`` (``None``: all of ``data``).

        The static buffers, filled, where the step is replayed; ``data`` itself for ``None``;
        a fresh subset for a smaller batch, which runs eagerly.
        """
        if positions is None:
            return self.data
        if self.static is None or not self.replays(positions):
            return self.data.subset(positions)
        return self.static.fill(positions)

    def __call__(self, positions: Tensor | None) -> Tensor:
        """One training step on the batch at ``positions``; its detached loss."""
        batch = self.batch(positions)
        if not self.replays(positions):
            return self._eager(batch)
        if self.graph is None:
            if self.warm_up_steps < WARMUP_STEPS:
                self.warm_up_steps += 1
                return self._warm_up(batch)
            self._capture(batch)
        self.graph.replay()
        return self.loss.clone()  # the next replay overwrites the graph's own

    def _eager(self, batch: LabelledData) -> Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=UNCAPTURED_WARNING)
            return self.step(self.model, batch, self.optimizer)

    def _warm_up(self, batch: LabelledData) -> Tensor:
        """An eager step on a side stream (PyTorch: warm up before capturing, off the main one)."""
        with torch.cuda.device(self.device):
            if self._side_stream is None:
                self._side_stream = torch.cuda.Stream()
            main = torch.cuda.current_stream()
            self._side_stream.wait_stream(main)  # the batch was filled on the main stream
            with torch.cuda.stream(self._side_stream):
                value = self._eager(batch)
            main.wait_stream(self._side_stream)
        return value

    def _capture(self, batch: LabelledData) -> None:
        """Record one step on ``batch`` into :attr:`graph`; nothing runs until it is replayed."""
        # Without gradients, the captured backward pass writes them into buffers of the
        # graph's own memory pool, where every replay finds them (PyTorch's whole-network
        # capture example does the same).
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.device(self.device):
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.loss = self.step(self.model, batch, self.optimizer)
