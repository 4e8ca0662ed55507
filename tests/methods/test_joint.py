"""Joint training: all data of tasks 0..t, each example on its own head, from a fresh network."""

import torch

from cl_bayes.data import LabelledData
from cl_bayes.methods.joint import Joint
from cl_bayes.models.mlp import MLP


def _sets(heads, n_outputs, sizes=(3, 4, 5)):
    g = torch.Generator().manual_seed(0)
    return [
        LabelledData(torch.randn(n, 5, generator=g), torch.randint(0, k, (n,), generator=g), h, k)
        for n, h, k in zip(sizes, heads, n_outputs, strict=True)
    ]


def test_task_incremental_joint_data_keeps_each_examples_head():
    sets = _sets(heads=[0, 1, 2], n_outputs=[2, 2, 2])
    data = Joint().training_data(1, sets)
    assert torch.equal(data.x, torch.cat([sets[0].x, sets[1].x]))
    assert torch.equal(data.y, torch.cat([sets[0].y, sets[1].y]))
    assert data.head.tolist() == [0] * 3 + [1] * 4
    assert data.n_outputs == 2
    assert len(Joint().training_data(2, sets)) == 12
    assert len(Joint().training_data(0, sets)) == 3


def test_class_incremental_joint_data_has_one_head_and_all_classes_seen():
    sets = _sets(heads=[0, 0, 0], n_outputs=[2, 4, 6])
    data = Joint().training_data(2, sets)
    assert data.head == 0  # a single shared head stays an int
    assert data.n_outputs == 6
    assert torch.equal(data.x, torch.cat([s.x for s in sets]))
    # A batch drawn from it keeps the per-example heads of mixed data.
    mixed = Joint().training_data(2, _sets(heads=[0, 1, 2], n_outputs=[2, 2, 2]))
    batch = mixed.subset(torch.tensor([0, 3, 11]))
    assert batch.head.tolist() == [0, 1, 2]


def test_before_task_retrains_from_scratch():
    torch.manual_seed(0)
    model = MLP(5, [7], [2, 2])
    sets = _sets(heads=[0, 1, 0], n_outputs=[2, 2, 2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(123)
    Joint().before_task(model, 1, Joint().training_data(1, sets))
    assert all(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Deterministic given the torch seed: exactly a new network drawn from that seed.
    torch.manual_seed(123)
    fresh = MLP(5, [7], [2, 2])
    for k, v in fresh.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v, rtol=0, atol=0)
