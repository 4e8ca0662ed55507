"""Fine-tuning: cross-entropy over the active outputs of the current task's data, nothing kept."""

import torch

from cl_bayes.data import LabelledData
from cl_bayes.methods.finetune import Finetune
from cl_bayes.models.mlp import MLP


def _data(n=8, n_outputs=4, head=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return LabelledData(
        torch.randn(n, 5, generator=g),
        torch.randint(0, n_outputs, (n,), generator=g),
        head,
        n_outputs,
    )


def test_loss_is_cross_entropy_over_the_active_outputs_only():
    torch.manual_seed(0)
    model = MLP(5, [7], [6])
    batch = _data(n_outputs=4)  # class-incremental: 4 of the head's 6 outputs seen so far
    loss = Finetune().loss(model, batch)
    # By hand: -log softmax over outputs 0..3 at the target, averaged over the batch.
    z = model(batch.x, 0)[:, :4]
    by_hand = (z.logsumexp(dim=1) - z[torch.arange(len(batch)), batch.y]).mean()
    torch.testing.assert_close(loss, by_hand)
    # Inactive outputs do not matter, however large their scores.
    with torch.no_grad():
        model.heads[0].bias[4:] = 100.0
    torch.testing.assert_close(Finetune().loss(model, batch), by_hand)


def test_loss_uses_each_examples_own_head():
    torch.manual_seed(0)
    model = MLP(5, [7], [2, 2])
    batch = _data(n_outputs=2)
    mixed = LabelledData(batch.x, batch.y, torch.tensor([0, 1] * 4), 2)
    parts = [mixed.subset(mixed.head == k) for k in (0, 1)]
    expected = sum(
        torch.nn.functional.cross_entropy(model(p.x, k), p.y, reduction="sum")
        for k, p in enumerate(parts)
    ) / len(batch)
    torch.testing.assert_close(Finetune().loss(model, mixed), expected)
    assert Finetune().loss(model, mixed).requires_grad


def test_finetune_trains_on_the_current_task_only_and_keeps_nothing():
    sets = [_data(seed=t) for t in range(3)]
    method = Finetune()
    assert method.training_data(1, sets) is sets[1]
    model = MLP(5, [7], [4])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    method.before_task(model, 1, sets[1])
    method.after_task(model, 1, sets[1])
    for k, v in model.state_dict().items():
        assert torch.equal(before[k], v)  # starts each task from the previous weights
    assert method.state_dict() == {}
