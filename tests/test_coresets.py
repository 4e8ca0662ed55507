import torch

from cl_bayes.coresets import k_center_coreset, random_coreset


def test_k_center_picks_the_farthest_points_greedily_from_the_first():
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [10.0, 0.0], [0.0, 5.0], [9.9, 0.1], [0.2, 4.8]])
    # Start at 0; farthest from {0} is (10, 0); farthest from {0, 2} is (0, 5);
    # then the remaining points' distances to the set are 0.1, ~0.14, ~0.28: (0.2, 4.8) is next.
    assert k_center_coreset(points, 4).tolist() == [0, 2, 3, 5]


def test_k_center_is_deterministic_on_images_and_flattens_them():
    torch.manual_seed(0)
    images = torch.rand(50, 1, 4, 4)
    first = k_center_coreset(images, 10)
    torch.manual_seed(123)
    assert torch.equal(first, k_center_coreset(images, 10))
    assert len(set(first.tolist())) == 10 and first[0] == 0


def test_random_coreset_draws_distinct_indices():
    torch.manual_seed(0)
    index = random_coreset(100, 30)
    assert len(set(index.tolist())) == 30 and index.min() >= 0 and index.max() < 100
    torch.manual_seed(1)
    assert not torch.equal(index, random_coreset(100, 30))
