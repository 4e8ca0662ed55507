"""The data files on disk: which ones torchvision reads, and what is wrong with a damaged one.

Before torchvision loads a data set, and again when it refuses one, the files it reads are
checked so that a damaged file is one line naming the file, the problem (size against its
idx header, magic number, permission, md5, unpickling) and the fix; a data set that is
missing and cannot be downloaded is one line listing the files expected.

torchvision is imported where a data set is read, not when the package is: importing it
also imports ``torch._dynamo`` (through ``torchvision.ops``), about 2 s that every command
reading no image data (``--help``, a config error, the synthetic sequence, a report) would
otherwise pay.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

from cl_bayes.errors import DataNotFoundError

DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100")
DATA_ENV_VAR = "CL_BAYES_DATA"


def dataset_class(dataset: str) -> type:
    """The torchvision class of ``dataset`` (one of :data:`DATASETS`)."""
    import torchvision

    return getattr(torchvision.datasets, dataset)


def expected_files(dataset: str, root: Path) -> list[Path]:
    """Files torchvision looks for when loading ``dataset`` from ``root``."""
    cls = dataset_class(dataset)
    if hasattr(cls, "resources"):  # MNIST family: <root>/<Class>/raw/<file without .gz>
        raw = root / cls.__name__ / "raw"
        return [raw / os.path.splitext(os.path.basename(url))[0] for url, _ in cls.resources]
    folder = root / cls.base_folder  # CIFAR family
    names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    return [folder / name for name in names]


# The idx files of the MNIST family (MNIST, FashionMNIST, KMNIST): a big-endian magic number
# 0x000008<n> (unsigned bytes, n dimensions), n big-endian 32-bit sizes, then the bytes.
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
IDX_EXAMPLES = {"train": 60000, "t10k": 10000}
IDX_IMAGE_SIZE = (28, 28)
_REFETCH = (
    "Delete it so that it is downloaded again (data.download=true), or restore it from a good copy."
)


def check_files(dataset: str, root: Path, thorough: bool) -> None:
    """Raise a one-line :class:`DataNotFoundError` for an expected file that is there but unusable.

    Every file must be readable, and an idx file (MNIST family) must have the header and the
    size of its kind; ``thorough`` also checks each CIFAR file against the release's md5
    and that it unpickles (read in full: only once torchvision has refused the files).
    """
    cls = dataset_class(dataset)
    for path in expected_files(dataset, root):
        if not path.exists():
            continue
        try:
            with open(path, "rb") as handle:
                header = handle.read(16)
        except PermissionError:
            raise DataNotFoundError(
                f"{dataset} file {path} cannot be read: permission denied. Make it readable "
                f"(chmod a+r {path}) or restore it from a good copy."
            ) from None
        except OSError as error:
            raise DataNotFoundError(
                f"{dataset} file {path} cannot be read ({error.strerror or error}). {_REFETCH}"
            ) from None
        if hasattr(cls, "resources"):
            problem = _idx_problem(path, header, dataset)
        elif thorough:
            problem = _cifar_problem(cls, path, dataset)
        else:
            problem = None
        if problem:
            raise DataNotFoundError(f"{dataset} file {path} {problem}. {_REFETCH}")


def _idx_problem(path: Path, header: bytes, dataset: str) -> str | None:
    """What is wrong with the idx file at ``path`` (whose first bytes are ``header``), or None."""
    kind = "images" if "-images-" in path.name else "labels"
    split = path.name.split("-")[0]
    size = path.stat().st_size
    n_dims = IDX_MAGIC[kind] & 0xFF
    header_size = 4 * (n_dims + 1)
    if header[:2] == b"\x1f\x8b":
        return (
            f"is gzip-compressed, not an idx file: decompress it "
            f"(mv {path} {path}.gz && gunzip {path}.gz)"
        )
    if size < 4:
        return f"is {size} bytes long: too short for an idx file (truncated)"
    magic = int.from_bytes(header[:4], "big")
    other = "labels" if kind == "images" else "images"
    if magic == IDX_MAGIC[other]:
        return f"is an idx file of {other}, not of {kind} (files swapped or misnamed)"
    if magic != IDX_MAGIC[kind]:
        return (
            f"is not an idx file of {kind}: its magic number is 0x{magic:08x} where "
            f"0x{IDX_MAGIC[kind]:08x} is expected"
        )
    if size < header_size:
        return f"is {size} bytes long: shorter than its {header_size}-byte header (truncated)"
    dims = [int.from_bytes(header[4 * i : 4 * i + 4], "big") for i in range(1, n_dims + 1)]
    expected = header_size + math.prod(dims)
    if size != expected:
        shape = " x ".join(str(d) for d in dims)
        what = "truncated" if size < expected else "extra bytes at the end"
        return (
            f"is {size:,} bytes long where its header ({shape} {kind}) needs {expected:,} ({what})"
        )
    name = "training" if split == "train" else "test"
    if dims[0] != IDX_EXAMPLES[split]:
        return (
            f"holds {dims[0]} {kind} where the {name} set of {dataset} has "
            f"{IDX_EXAMPLES[split]} (a cut-down or different file)"
        )
    if kind == "images" and tuple(dims[1:]) != IDX_IMAGE_SIZE:
        height, width = IDX_IMAGE_SIZE
        return f"holds {dims[1]} x {dims[2]} images where {dataset} has {height} x {width}"
    return None


def _cifar_problem(cls, path: Path, dataset: str) -> str | None:
    """What is wrong with the CIFAR file at ``path``, or None."""
    md5 = dict(cls.train_list + cls.test_list + [(cls.meta["filename"], cls.meta["md5"])])
    # The module's own function, as torchvision calls it (the tests accept any file there).
    import torchvision

    if not torchvision.datasets.cifar.check_integrity(str(path), md5[path.name]):
        return (
            f"does not match the md5 checksum of the {dataset} release "
            f"({path.stat().st_size:,} bytes: damaged, truncated or another version)"
        )
    try:
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="latin1")
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a damaged file
        return f"is not a pickled {dataset} file ({type(error).__name__}: {error})"
    if not isinstance(entry, dict):
        return f"is not a pickled {dataset} file (it holds a {type(entry).__name__}, not a dict)"
    return None


def download_or_explain(cls, dataset: str, root: Path, train: bool, download: bool):
    """Download ``dataset``'s split where allowed; else one line listing the files expected."""
    files = "\n  ".join(
        f"{p}" if p.exists() else f"{p} (missing)" for p in expected_files(dataset, root)
    )
    fix = (
        f"Fix: point the data root at a folder holding these files, with `data.root=/path` "
        f"or the environment variable {DATA_ENV_VAR}=/path, or run where the download can "
        f"reach the internet with data.download=true."
    )
    if not download:
        raise DataNotFoundError(
            f"{dataset} not found under {root} and downloading is off (data.download=false).\n"
            f"Expected files:\n  {files}\n{fix}"
        )
    try:
        return cls(str(root), train=train, download=True)
    except Exception as error:  # noqa: BLE001 - any download failure gets the same clear message
        raise DataNotFoundError(
            f"{dataset} not found under {root} and the download failed "
            f"({type(error).__name__}: {error}).\nExpected files:\n  {files}\n{fix}"
        ) from None
