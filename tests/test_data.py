"""Task sequences built from real MNIST and from a tiny CIFAR-10 written in torchvision's format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from cl_bayes import data
from cl_bayes.errors import ConfigError, DataNotFoundError

CPU = torch.device("cpu")


def _rows(x: torch.Tensor) -> list[bytes]:
    """Each image as bytes, sorted: a multiset of images, comparable across orderings."""
    return sorted(row.numpy().tobytes() for row in x.flatten(1))


@pytest.fixture(scope="module")
def mnist(data_root):
    """torchvision's own view of MNIST: pixels as float in [0, 1] and digit labels."""
    out = {}
    for split in ("train", "test"):
        ds = torchvision.datasets.MNIST(str(data_root), train=split == "train", download=False)
        out[split] = (ds.data.unsqueeze(1).float() / 255.0, ds.targets)
    return out


def test_load_torchvision_gives_normalised_float_images(data_root):
    splits = data.load_torchvision("MNIST", data_root, download=False, device=CPU)
    x, y = splits["train"]
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (60000,) and y.dtype == torch.long
    assert x.min() == 0.0 and x.max() == 1.0
    assert splits["test"][0].shape == (10000, 1, 28, 28)


def test_split_mnist_tasks_hold_exactly_their_two_digits(mnist, cached_data, data_root):
    seq = data.split_sequence(
        "split_mnist", "MNIST", root=data_root, download=False, device=CPU, seed=0
    )
    assert seq.n_tasks == 5 and seq.input_shape == (1, 28, 28)
    assert seq.default_scenario == "task"
    for k, task in enumerate(seq.tasks):
        assert task.n_classes == 2 and task.name == f"{2 * k}/{2 * k + 1}"
        for split, x, y in (
            ("train", task.x_train, task.y_train),
            ("test", task.x_test, task.y_test),
        ):
            x_all, digits = mnist[split]
            keep = (digits == 2 * k) | (digits == 2 * k + 1)
            # The same images, in torchvision's order, first digit of the pair -> label 0.
            torch.testing.assert_close(x, x_all[keep], rtol=0, atol=0)
            torch.testing.assert_close(y, digits[keep] - 2 * k, rtol=0, atol=0)
            assert set(y.tolist()) == {0, 1}
        assert len(task.y_val) == 0


def test_train_size_caps_each_task_and_depends_on_the_seed(cached_data, data_root):
    def build(seed, **kw):
        return data.split_sequence(
            "s",
            "MNIST",
            train_size=100,
            root=data_root,
            download=False,
            device=CPU,
            seed=seed,
            **kw,
        )

    a, b, c = build(0), build(0), build(1)
    for task_a, task_b, task_c in zip(a.tasks, b.tasks, c.tasks, strict=True):
        assert len(task_a.y_train) == 100
        assert len(task_a.y_test) > 1000  # the test set is never subsampled
        torch.testing.assert_close(task_a.x_train, task_b.x_train, rtol=0, atol=0)
        assert not torch.equal(task_a.x_train, task_c.x_train)
    # Fewer tasks when asked; an impossible number is a ConfigError.
    assert build(0, n_tasks=2).n_tasks == 2
    with pytest.raises(ConfigError, match="not enough for 6 tasks"):
        build(0, n_tasks=6)


def test_val_fraction_partitions_the_training_data(mnist, cached_data, data_root):
    full = data.split_sequence(
        "s", "MNIST", n_tasks=2, root=data_root, download=False, device=CPU, seed=0
    )
    held = data.split_sequence(
        "s",
        "MNIST",
        n_tasks=2,
        val_fraction=0.25,
        root=data_root,
        download=False,
        device=CPU,
        seed=0,
    )
    for task_full, task in zip(full.tasks, held.tasks, strict=True):
        n = len(task_full.y_train)
        assert len(task.y_val) == round(0.25 * n)
        assert len(task.y_train) + len(task.y_val) == n
        # train and val together are exactly the task's training images: disjoint, complete.
        assert _rows(torch.cat([task.x_train, task.x_val])) == _rows(task_full.x_train)
        torch.testing.assert_close(task.x_test, task_full.x_test, rtol=0, atol=0)
    # Capped and carved: the cap applies to what is left after the validation split.
    capped = data.split_sequence(
        "s",
        "MNIST",
        n_tasks=1,
        train_size=50,
        val_fraction=0.1,
        root=data_root,
        download=False,
        device=CPU,
        seed=0,
    )
    task = capped.tasks[0]
    assert len(task.y_train) == 50 and len(task.y_val) == round(0.1 * len(full.tasks[0].y_train))
    assert not set(_rows(task.x_train)) & set(_rows(task.x_val))


def test_carve_indices_are_disjoint_sorted_and_capped():
    generator = torch.Generator().manual_seed(0)
    train, val = data._carve(1000, train_size=300, val_fraction=0.2, generator=generator)
    assert len(val) == 200 and len(train) == 300
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(train, train.sort().values) and torch.equal(val, val.sort().values)
    train, val = data._carve(10, train_size=None, val_fraction=0.0, generator=generator)
    assert torch.equal(train, torch.arange(10)) and len(val) == 0


@pytest.mark.parametrize("bad", [{"train_size": 0}, {"val_fraction": 1.0}, {"n_tasks": 0}])
def test_bad_common_options_are_config_errors(bad, cached_data, data_root):
    with pytest.raises(ConfigError, match="task\\."):
        data.split_sequence("s", "MNIST", root=data_root, download=False, device=CPU, seed=0, **bad)


def test_permutations_depend_on_the_task_index_only(mnist, cached_data, data_root):
    def build(seed, first_unpermuted=False):
        return data.permuted_sequence(
            "p",
            n_tasks=3,
            train_size=20,
            first_unpermuted=first_unpermuted,
            root=data_root,
            download=False,
            device=CPU,
            seed=seed,
        )

    x_test, y_test = mnist["test"]
    seeds = [build(0), build(1)]
    for t in range(3):
        perm = torch.as_tensor(np.random.RandomState(t).permutation(784))
        expected = x_test.flatten(1)[:, perm].reshape(-1, 1, 28, 28)
        for seq in seeds:
            torch.testing.assert_close(seq.tasks[t].x_test, expected, rtol=0, atol=0)
            torch.testing.assert_close(seq.tasks[t].y_test, y_test, rtol=0, atol=0)
            assert seq.tasks[t].n_classes == 10
    # Every task is permuted by default, the first too (task 0 is not the identity).
    assert not torch.equal(seeds[0].tasks[0].x_test, x_test)
    # Different seeds still draw different training subsets.
    assert not torch.equal(seeds[0].tasks[0].x_train, seeds[1].tasks[0].x_train)

    unpermuted = build(0, first_unpermuted=True)
    torch.testing.assert_close(unpermuted.tasks[0].x_test, x_test, rtol=0, atol=0)
    torch.testing.assert_close(unpermuted.tasks[1].x_test, seeds[0].tasks[1].x_test, rtol=0, atol=0)


def test_rotations(mnist, cached_data, data_root):
    seq = data.rotated_sequence(
        "r",
        angles=[0, 90, 45],
        n_tasks=2,
        train_size=20,
        root=data_root,
        download=False,
        device=CPU,
        seed=0,
    )
    assert seq.n_tasks == 2 and seq.default_scenario == "domain"
    x_test, y_test = mnist["test"]
    torch.testing.assert_close(seq.tasks[0].x_test, x_test, rtol=0, atol=0)
    # torch.rot90 with k=1 over (height, width) turns images counter-clockwise: the top-right
    # pixel goes to the top-left. Positive angles are counter-clockwise, as in torchvision.
    corner = torch.zeros(1, 1, 28, 28)
    corner[0, 0, 0, 27] = 1.0
    assert torch.rot90(corner, 1, dims=(2, 3))[0, 0, 0, 0] == 1.0
    torch.testing.assert_close(
        seq.tasks[1].x_test, torch.rot90(x_test, 1, dims=(2, 3)), rtol=0, atol=0
    )
    torch.testing.assert_close(seq.tasks[1].y_test, y_test, rtol=0, atol=0)
    with pytest.raises(ConfigError, match="angles"):
        data.rotated_sequence(
            "r", angles=[0, 90], n_tasks=3, root=data_root, download=False, device=CPU, seed=0
        )


def test_split_cifar10_from_files_in_torchvisions_format(tiny_cifar10):
    tmp_path, batches = tiny_cifar10
    seq = data.split_sequence(
        "split_cifar10",
        "CIFAR10",
        classes_per_task=2,
        root=tmp_path,
        download=False,
        device=CPU,
        seed=0,
    )
    assert seq.n_tasks == 5 and seq.input_shape == (3, 32, 32)
    train_rows = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    test_rows, test_labels = batches["test_batch"][0], np.array(batches["test_batch"][1])
    for k, task in enumerate(seq.tasks):
        for x, y, rows, labels in (
            (task.x_train, task.y_train, train_rows, train_labels),
            (task.x_test, task.y_test, test_rows, test_labels),
        ):
            keep = (labels == 2 * k) | (labels == 2 * k + 1)
            assert x.shape == (keep.sum(), 3, 32, 32) and x.dtype == torch.float32
            assert 0.0 <= x.min() and x.max() <= 1.0
            # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major.
            expected = torch.as_tensor(rows[keep].reshape(-1, 3, 32, 32)).float() / 255.0
            torch.testing.assert_close(x, expected, rtol=0, atol=0)
            assert y.tolist() == (labels[keep] - 2 * k).tolist()
    assert seq.tasks[0].x_train[0].max() == 0.0  # the all-zero image (class 0)
    assert seq.tasks[0].x_train[1].min() == 1.0  # the all-255 image (class 1)


def test_missing_data_names_the_folder_and_the_expected_files(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.load_torchvision("MNIST", tmp_path, download=False, device=CPU)
    message = str(info.value)
    assert str(tmp_path.resolve()) in message
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(tmp_path.resolve() / "MNIST" / "raw" / name) in message
    assert "data.root" in message and data.DATA_ENV_VAR in message


def test_missing_cifar_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.split_sequence("c", "CIFAR10", root=tmp_path, download=False, device=CPU, seed=0)
    assert str(tmp_path.resolve() / "cifar-10-batches-py" / "data_batch_1") in str(info.value)
    assert "test_batch" in str(info.value)


def test_unknown_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Unknown dataset 'SVHN'.*MNIST, FashionMNIST"):
        data.load_torchvision("SVHN", tmp_path, download=False, device=CPU)
