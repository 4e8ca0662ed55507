import torch

from cl_bayes.models.bayes_mlp import BayesMLP


def test_shapes_of_sampled_and_mean_logits_and_head_routing():
    torch.manual_seed(0)
    model = BayesMLP(12, [8, 8], [3, 3, 3])
    x = torch.rand(5, 1, 3, 4)
    assert model(x, 1).shape == (5, 3)
    assert model(x, 1, n_samples=7).shape == (7, 5, 3)
    heads = torch.tensor([0, 2, 1, 2, 0])
    mixed = model(x, heads)
    for i, head in enumerate(heads.tolist()):
        assert torch.allclose(mixed[i], model(x[i : i + 1], head)[0], atol=1e-6)
    assert model(x, heads, n_samples=4).shape == (4, 5, 3)


def test_kl_covers_the_body_and_only_the_given_heads():
    torch.manual_seed(0)
    model = BayesMLP(4, [3], [2, 2])
    body = sum(layer.kl() for layer in model.body)
    assert torch.allclose(model.kl([0]), body + model.heads[0].kl())
    assert torch.allclose(model.kl([0, 1]), body + model.heads[0].kl() + model.heads[1].kl())
