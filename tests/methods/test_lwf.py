"""LwF: cross-entropy plus T**2 times the KL from the frozen snapshot's softened outputs.

The distillation term is the KL form (exactly 0 when the network equals its snapshot); it
differs from the paper's modified cross-entropy by the snapshot's entropy, checked below.
"""

import io

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from cl_bayes.data import LabelledData
from cl_bayes.errors import ConfigError
from cl_bayes.methods.lwf import LwF
from cl_bayes.models.mlp import MLP
from cl_bayes.run import run
from tests.conftest import compose_config


def _data(head=0, n_outputs=2, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 5, generator=g),
        torch.randint(0, n_outputs, (n,), generator=g),
        head,
        n_outputs,
    )


def _after_tasks(model, method, tasks):
    """``method`` as it stands after training ``tasks`` (the network left as it is)."""
    for t, data in enumerate(tasks):
        method.before_task(model, t, data)
        method.after_task(model, t, data)


def _perturb(module, scale=0.5, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _kl(snapshot_logits, logits, T):
    """KL(softmax(s / T) || softmax(z / T)) per example, from torch.distributions."""
    return kl_divergence(Categorical(logits=snapshot_logits / T), Categorical(logits=logits / T))


def test_distillation_is_exactly_zero_when_the_network_equals_its_snapshot():
    torch.manual_seed(0)
    model = MLP(5, [7], [2])
    method = LwF(distillation_weight=3.0, temperature=2.0)
    _after_tasks(model, method, [_data()])
    batch = _data(seed=1)
    method.before_task(model, 1, batch)
    ce = F.cross_entropy(model(batch.x, 0), batch.y)
    assert torch.equal(method.loss(model, batch), ce)


def test_distillation_is_alpha_t2_times_the_kl_and_positive_when_the_network_moved():
    torch.manual_seed(0)
    model = MLP(5, [7], [2])
    method = LwF(distillation_weight=3.0, temperature=2.5)
    _after_tasks(model, method, [_data()])
    batch = _data(seed=1)
    method.before_task(model, 1, batch)
    s = model(batch.x, 0).detach()
    _perturb(model)
    z = model(batch.x, 0)
    distillation = method.loss(model, batch) - F.cross_entropy(z, batch.y)
    expected = 3.0 * 2.5**2 * _kl(s, z, 2.5).mean()
    torch.testing.assert_close(distillation, expected)
    assert distillation > 1e-3
    # The paper's form (cross-entropy of the softened outputs) is the same term plus the
    # snapshot's entropy: the same gradients, a constant apart.
    p = (s / 2.5).softmax(-1)
    paper = -(p * (z / 2.5).log_softmax(-1)).sum(-1).mean()
    entropy = Categorical(probs=p).entropy().mean()
    torch.testing.assert_close(distillation / (3.0 * 2.5**2), paper - entropy)


def test_the_snapshot_is_a_frozen_copy_that_does_not_change_during_the_task():
    torch.manual_seed(0)
    model = MLP(5, [7], [2, 2])
    method = LwF()
    _after_tasks(model, method, [_data(head=0)])
    assert method.snapshot is None  # released at the end of each task
    data = _data(head=1, seed=1)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    method.before_task(model, 1, data)
    snapshot = method.snapshot
    assert snapshot is not model and not snapshot.training
    assert all(not p.requires_grad for p in snapshot.parameters())
    model_storage = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() not in model_storage for p in snapshot.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(5):
        method.train_step(model, data, optimizer)
    assert not torch.equal(model.body[1].weight, start["body.1.weight"])  # the network moved
    for name, value in snapshot.state_dict().items():
        assert torch.equal(value, start[name]), name  # ... its snapshot did not
    assert all(p.grad is None for p in snapshot.parameters())
    method.after_task(model, 1, data)
    assert method.snapshot is None


def test_task_incremental_distils_every_previous_head_averaged_over_heads():
    torch.manual_seed(0)
    model = MLP(5, [7], [2, 2, 2, 2])
    method = LwF(distillation_weight=2.0, temperature=2.0)
    _after_tasks(model, method, [_data(head=0), _data(head=1, seed=1)])
    batch = _data(head=2, seed=2)
    method.before_task(model, 2, batch)
    snapshot = [model(batch.x, h).detach() for h in range(4)]
    _perturb(model)

    # By hand: CE on head 2, plus alpha T^2 times the mean over heads 0 and 1 of their KL.
    z = [model(batch.x, h) for h in range(4)]
    kl = [_kl(snapshot[h], z[h], 2.0).mean() for h in (0, 1)]
    expected = F.cross_entropy(z[2], batch.y) + 2.0 * 4.0 * (kl[0] + kl[1]) / 2
    loss = method.loss(model, batch)
    torch.testing.assert_close(loss, expected)

    # The gradient reaches the previous heads (through distillation only), and never the
    # head of a task not yet trained.
    model.zero_grad()
    loss.backward()
    for h in (0, 1, 2):
        assert model.heads[h].weight.grad.abs().sum() > 0, h
    assert model.heads[3].weight.grad is None
    model.zero_grad()
    LwF(distillation_weight=0.0).loss(model, batch).backward()
    assert model.heads[0].weight.grad is None and model.heads[1].weight.grad is None


def test_domain_incremental_distils_the_shared_head():
    torch.manual_seed(0)
    model = MLP(5, [7], [2])
    method = LwF(distillation_weight=1.5, temperature=3.0)
    _after_tasks(model, method, [_data(), _data(seed=1)])
    batch = _data(seed=2)
    method.before_task(model, 2, batch)
    s = model(batch.x, 0).detach()
    _perturb(model)
    z = model(batch.x, 0)
    expected = F.cross_entropy(z, batch.y) + 1.5 * 9.0 * _kl(s, z, 3.0).mean()
    torch.testing.assert_close(method.loss(model, batch), expected)


def test_class_incremental_distils_the_old_classes_and_trains_all_active_outputs():
    torch.manual_seed(0)
    model = MLP(5, [7], [6])  # 3 tasks of 2 classes
    method = LwF(distillation_weight=1.0, temperature=2.0)
    _after_tasks(model, method, [_data(n_outputs=2), _data(n_outputs=4, seed=1)])
    assert method.trained_outputs == {0: 4}
    batch = _data(n_outputs=6, seed=2)
    method.before_task(model, 2, batch)
    s = model(batch.x, 0).detach()
    _perturb(model)
    z = model(batch.x, 0)
    expected = F.cross_entropy(z, batch.y) + 4.0 * _kl(s[:, :4], z[:, :4], 2.0).mean()
    torch.testing.assert_close(method.loss(model, batch), expected)
    # The new classes' outputs are not distilled: moving only them changes the CE alone.
    with torch.no_grad():
        model.heads[0].bias[4:] += 5.0
    z = model(batch.x, 0)
    expected = F.cross_entropy(z, batch.y) + 4.0 * _kl(s[:, :4], z[:, :4], 2.0).mean()
    torch.testing.assert_close(method.loss(model, batch), expected)


def test_first_task_is_plain_cross_entropy():
    torch.manual_seed(0)
    model = MLP(5, [7], [2])
    method = LwF(distillation_weight=5.0)
    batch = _data()
    method.before_task(model, 0, batch)
    assert method.snapshot is None
    assert torch.equal(method.loss(model, batch), F.cross_entropy(model(batch.x, 0), batch.y))


def test_a_restored_method_distils_the_same_snapshot():
    torch.manual_seed(0)
    model = MLP(5, [7], [2, 2, 2])
    method = LwF()
    _after_tasks(model, method, [_data(head=0), _data(head=1, seed=1)])
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    restored = LwF()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.trained_outputs == {0: 2, 1: 2}
    batch = _data(head=2, seed=2)
    for m in (method, restored):
        m.before_task(model, 2, batch)
    _perturb(model)
    assert torch.equal(method.loss(model, batch), restored.loss(model, batch))


@pytest.mark.parametrize(
    "kwargs", [{"temperature": 0.0}, {"temperature": -1.0}, {"distillation_weight": -0.1}]
)
def test_bad_settings_are_one_clear_error(kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ConfigError, match=f"method.{key}"):
        LwF(**kwargs)


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_lwf_runs_end_to_end_on_the_synthetic_sequence(tmp_path, scenario):
    records = {}
    for name in ("finetune", "lwf"):
        cfg = compose_config(
            "task=synthetic",
            "task.n_tasks=3",
            "task.train_size=200",
            "task.test_size=100",
            "train.epochs=5",
            "train.batch_size=32",
            "model.hidden_sizes=[16]",
            "progress=false",
            "device=cpu",
            f"method={name}",
            f"scenario={scenario}",
            f"results_dir={tmp_path}/results",
        )
        records[name] = run(cfg, tmp_path / name)
    record = records["lwf"]
    assert record["status"] == "completed" and record["method"] == "lwf"
    R = torch.tensor(record["accuracy_matrix"])
    assert torch.all(R.diagonal() > 0.6)  # every task is learnt (chance: 0.5 or below)
    # The first task trains as finetune does (no snapshot yet); later ones distil it.
    finetune = torch.tensor(records["finetune"]["accuracy_matrix"])
    assert torch.equal(R[0].nan_to_num(), finetune[0].nan_to_num())
    assert not torch.equal(R[1:].nan_to_num(), finetune[1:].nan_to_num())


def test_lwf_forgets_less_than_finetune_on_two_real_mnist_tasks(tiny_cfg, tmp_path, cached_data):
    common = [
        "task.n_tasks=2",
        "task.train_size=1000",
        "train.epochs=5",
        "train.batch_size=64",
        "model.hidden_sizes=[64]",
        "seed=0",
        "scenario=domain",
    ]
    finetune = run(tiny_cfg(*common, "method=finetune"), tmp_path / "finetune")
    lwf = run(tiny_cfg(*common, "method=lwf", "method.distillation_weight=1"), tmp_path / "lwf")
    f_first, l_first = finetune["accuracy_matrix"][1][0], lwf["accuracy_matrix"][1][0]
    assert l_first > f_first + 0.05, (l_first, f_first)
