"""Task sequences built from real MNIST and from a tiny CIFAR-10 written in torchvision's format."""

from __future__ import annotations

import builtins
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from cl_bayes import data, data_files
from cl_bayes.errors import ConfigError, DataNotFoundError, UserError
from tests.conftest import _write_tiny_cifar10, run_cli

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


def test_load_torchvision_gives_the_pixels_as_bytes(data_root):
    splits = data.load_torchvision("MNIST", data_root, download=False, device=CPU)
    x, y = splits["train"]
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.uint8 and x.is_contiguous()
    assert y.shape == (60000,) and y.dtype == torch.long
    assert x.min() == 0 and x.max() == 255
    assert splits["test"][0].shape == (10000, 1, 28, 28)


def test_pixels_become_floats_in_the_unit_interval():
    pixels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).reshape(1, 1, 2, 2)
    x = data.pixels_to_float(pixels)
    assert x.dtype == torch.float32 and x.is_contiguous()
    torch.testing.assert_close(x, pixels.float() / 255.0, rtol=0, atol=0)
    # A permuted (channels-last) view comes out contiguous too; floats are kept as they are.
    hwc = torch.arange(24, dtype=torch.uint8).reshape(1, 2, 4, 3).permute(0, 3, 1, 2)
    assert data.pixels_to_float(hwc).is_contiguous()
    assert data.pixels_to_float(x) is x


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
            assert x.dtype == torch.float32 and x.is_contiguous()
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
    assert "data.root" in message and data_files.DATA_ENV_VAR in message


def test_missing_cifar_files_are_named(tmp_path):
    with pytest.raises(DataNotFoundError) as info:
        data.split_sequence("c", "CIFAR10", root=tmp_path, download=False, device=CPU, seed=0)
    assert str(tmp_path.resolve() / "cifar-10-batches-py" / "data_batch_1") in str(info.value)
    assert "test_batch" in str(info.value)


def test_unknown_dataset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="Unknown dataset 'SVHN'.*MNIST, FashionMNIST"):
        data.load_torchvision("SVHN", tmp_path, download=False, device=CPU)


# Damaged files: one line naming the file, what is wrong with it and how to fix it.

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@pytest.fixture
def mnist_copy(tmp_path, data_root):
    """``(root, raw)``: MNIST in torchvision's layout under ``tmp_path``, each file a link to
    the real one; a test replaces the file it damages with a real file."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).symlink_to(data_root / "MNIST" / "raw" / name)
    return tmp_path, raw


def _replace(path: Path, content: bytes) -> None:
    path.unlink()
    path.write_bytes(content)


def _error(root) -> str:
    """The message ``load_torchvision`` refuses MNIST under ``root`` with: one line."""
    with pytest.raises(DataNotFoundError) as info:
        data.load_torchvision("MNIST", root, download=False, device=CPU)
    assert isinstance(info.value, UserError)  # reported without a traceback
    message = str(info.value)
    assert "\n" not in message
    return message


def _idx(magic: int, dims: list[int], body: bytes) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + body


def test_a_truncated_idx_file_is_named_with_its_expected_size(mnist_copy, data_root):
    root, raw = mnist_copy
    real = (data_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    _replace(raw / "t10k-images-idx3-ubyte", real[:100_016])
    message = _error(root)
    assert str(raw.resolve() / "t10k-images-idx3-ubyte") in message
    assert "100,016 bytes long" in message and "10000 x 28 x 28 images" in message
    assert "needs 7,840,016 (truncated)" in message
    assert "not found" not in message and "Delete it so that it is downloaded again" in message


def test_garbage_bytes_are_not_an_idx_file(mnist_copy):
    root, raw = mnist_copy
    _replace(raw / "train-labels-idx1-ubyte", bytes(range(256)) * 40)
    message = _error(root)
    assert str(raw.resolve() / "train-labels-idx1-ubyte") in message
    assert "is not an idx file of labels: its magic number is 0x00010203" in message
    assert "0x00000801 is expected" in message and "Delete it" in message


def test_a_consistent_but_cut_down_idx_file_is_named(mnist_copy):
    root, raw = mnist_copy
    _replace(raw / "train-labels-idx1-ubyte", _idx(0x801, [100], bytes(100)))
    message = _error(root)
    assert str(raw.resolve() / "train-labels-idx1-ubyte") in message
    assert "holds 100 labels where the training set of MNIST has 60000" in message


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "is 0 bytes long"),
        (b"\x1f\x8b\x08\x08" + bytes(100), "is gzip-compressed"),
        (_idx(0x801, [10000], bytes(10000)), "is an idx file of labels, not of images"),
        (_idx(0x803, [10000, 28, 28], bytes(10000 * 784 + 5)), "(extra bytes at the end)"),
        (_idx(0x803, [10000, 32, 32], bytes(10000 * 1024)), "holds 32 x 32 images"),
    ],
)
def test_other_damaged_idx_files(content, problem, tmp_path):
    # Only the damaged file is there: the others are simply missing, and not reported first.
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(content)
    message = _error(tmp_path)
    assert str(raw.resolve() / "t10k-images-idx3-ubyte") in message and problem in message


def _make_unreadable(path: Path, monkeypatch) -> None:
    """Take read permission away from ``path``; where the tests run as root, which reads any
    file whatever its mode, ``open`` in ``cl_bayes.data_files`` fails as it would for a user."""
    path.chmod(0)
    if os.access(path, os.R_OK):
        real_open = builtins.open

        def denied(file, *args, **kwargs):
            if Path(file).resolve() == path.resolve():
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(data_files, "open", denied, raising=False)


def test_an_unreadable_file_is_named(mnist_copy, data_root, monkeypatch):
    root, raw = mnist_copy
    path = raw / "t10k-labels-idx1-ubyte"
    path.unlink()
    shutil.copyfile(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", path)
    _make_unreadable(path, monkeypatch)
    try:
        message = _error(root)
    finally:
        path.chmod(0o644)
    assert str(raw.resolve() / "t10k-labels-idx1-ubyte") in message
    assert "cannot be read: permission denied" in message and "chmod a+r" in message


def test_a_damaged_file_fails_the_cli_in_one_line(mnist_copy, data_root, tmp_path):
    root, raw = mnist_copy
    real = (data_root / "MNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes()
    _replace(raw / "train-labels-idx1-ubyte", real[:1000])
    proc = run_cli(
        "method=finetune",
        f"data.root={root}",
        "data.download=false",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"results_dir={tmp_path / 'results'}",
        cwd=tmp_path,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert str(raw.resolve() / "train-labels-idx1-ubyte") in out and "(truncated)" in out


def test_missing_files_are_marked_among_the_expected_ones(mnist_copy):
    root, raw = mnist_copy
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError) as info:
        data.load_torchvision("MNIST", root, download=False, device=CPU)
    message = str(info.value)
    assert f"{raw.resolve() / 't10k-labels-idx1-ubyte'} (missing)" in message
    assert f"{raw.resolve() / 'train-images-idx3-ubyte'}\n" in message  # there, not missing


def _cifar_error(root) -> str:
    with pytest.raises(DataNotFoundError) as info:
        data.load_torchvision("CIFAR10", root, download=False, device=CPU)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_cifar_file_with_the_wrong_checksum_is_named(tmp_path):
    # Files in the right layout that are not the real release: torchvision's md5 check fails.
    _write_tiny_cifar10(tmp_path, np.random.default_rng(0))
    message = _cifar_error(tmp_path)
    path = tmp_path.resolve() / "cifar-10-batches-py" / "data_batch_1"
    assert f"CIFAR10 file {path} does not match the md5 checksum" in message
    assert "Delete it so that it is downloaded again" in message


def test_a_cifar_file_of_garbage_is_named(tiny_cifar10):
    root, _ = tiny_cifar10  # the md5 check is off: the garbage reaches the unpickler
    path = root / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(bytes(range(256)) * 4)
    message = _cifar_error(root)
    assert f"CIFAR10 file {path.resolve()} is not a pickled CIFAR10 file" in message


def test_an_unreadable_cifar_file_is_named(tiny_cifar10, monkeypatch):
    root, _ = tiny_cifar10
    path = root / "cifar-10-batches-py" / "data_batch_2"
    _make_unreadable(path, monkeypatch)
    try:
        message = _cifar_error(root)
    finally:
        path.chmod(0o644)
    assert f"CIFAR10 file {path.resolve()} cannot be read: permission denied" in message
