"""Finding samples: paths, labels and classes, with torchvision's ImageFolder semantics.

The folder walk is torchvision's own (`find_classes`, `make_dataset`), so `classes` and
`class_to_idx` equal ImageFolder's for the same root by construction. Imports no DALI.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from .errors import DatasetError
from .imaging import upright_rgb8

# A folder, or (paths, labels): sequences, numpy arrays, torch tensors or pandas columns.
Source = Union[str, "os.PathLike[str]", tuple[Sequence[Any], Sequence[Any]]]


@dataclass(frozen=True)
class ShardLocations:
    """Sample i is bytes [offsets[i], offsets[i] + sizes[i]) of shards[shard_ids[i]]."""

    shards: tuple[str, ...]
    shard_ids: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray

    def subset(self, rows: np.ndarray) -> ShardLocations:
        return ShardLocations(
            self.shards, self.shard_ids[rows], self.offsets[rows], self.sizes[rows]
        )


@dataclass(frozen=True, eq=False)
class SampleIndex:
    """Every sample of a data set, in a fixed order: sample i is (paths[i], labels[i])."""

    paths: tuple[str, ...]
    labels: tuple[int, ...]
    classes: list[str]  # a list, as ImageFolder.classes (`loader.dataset.classes`)
    class_to_idx: dict[str, int]
    root: str | None = None  # the folder it was walked from, if any
    locations: ShardLocations | None = None  # set for a packed data set: bytes in tar shards
    # (N, 2) int32 (width, height) of each sample as delivered (EXIF orientation applied), from
    # the dataset check or the pack manifest: the augmentation is drawn from it before decoding.
    sizes: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    # ImageFolder's surface, for code that reads `loader.dataset` as it read its dataset.
    @functools.cached_property
    def samples(self) -> list[tuple[str, int]]:
        """(path, label) of every sample, in order, as ImageFolder's `samples`."""
        return list(zip(self.paths, self.labels, strict=True))

    @property
    def imgs(self) -> list[tuple[str, int]]:
        return self.samples

    @functools.cached_property
    def targets(self) -> list[int]:
        return list(self.labels)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        """Sample i as ImageFolder without a transform gives it: the RGB image as delivered
        (EXIF orientation applied, deep grayscale scaled), and its label."""
        i = range(len(self))[i]  # negative indices, and IndexError past the end
        where = self.locations
        if where is None:
            with open(self.paths[i], "rb") as f:
                data = f.read()
        else:
            with open(where.shards[int(where.shard_ids[i])], "rb") as f:
                f.seek(int(where.offsets[i]))
                data = f.read(int(where.sizes[i]))
        with Image.open(io.BytesIO(data)) as image:
            rgb = upright_rgb8(image)
            rgb.load()
        return rgb, self.labels[i]

    def subset(self, keep: Sequence[int]) -> SampleIndex:
        """The samples `keep`, in that order, with every field that describes them."""
        rows = np.asarray(keep, dtype=np.int64)
        where = self.locations
        return dataclasses.replace(
            self,
            paths=tuple(self.paths[i] for i in keep),
            labels=tuple(self.labels[i] for i in keep),
            locations=None if where is None else where.subset(rows),
            sizes=None if self.sizes is None else self.sizes[rows],
        )

    @functools.cached_property
    def sha1(self) -> str:
        """Which samples, in which order, with which labels; the same wherever the root is."""
        digest = hashlib.sha1("\0".join(self.classes).encode(errors="surrogateescape"))
        for path, label in zip(self.paths, self.labels, strict=True):
            name = os.path.relpath(path, self.root) if self.root else path
            digest.update(f"\0{name}\0{label}".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def files(self, samples: np.ndarray) -> list[str]:
        """The files on disk that hold these samples: their own files, or their shards."""
        if self.locations is None:
            return [self.paths[i] for i in samples]
        shards = np.unique(self.locations.shard_ids[samples])
        return [self.locations.shards[k] for k in shards]


def build_index(source: Source) -> SampleIndex:
    """Index an ImageFolder-style root directory, or explicit `(paths, labels)` sequences."""
    if isinstance(source, (str, os.PathLike)):
        return index_folder(source)
    if isinstance(source, (tuple, list)) and len(source) == 2:
        return index_pairs(*source)
    raise DatasetError(
        "source must be an image folder root or a (paths, labels) pair, "
        f"got {type(source).__name__}"
    )


def index_folder(root: str | os.PathLike[str]) -> SampleIndex:
    """Walk `root/<class>/**/<image>` exactly as torchvision's ImageFolder does."""
    # Absolute, not normalized (a "link/.." stays where the kernel puts it): the backends read
    # the files later, maybe after the process changed its directory.
    root = Path(root).expanduser().absolute()
    if not root.exists():
        raise DatasetError(f"dataset root {str(root)!r} does not exist; check the path")
    if not root.is_dir():
        raise DatasetError(
            f"dataset root {str(root)!r} is not a directory; pass the folder that holds one "
            "sub-folder per class"
        )
    _refuse_repeated_folders(root)
    try:
        classes, class_to_idx = find_classes(root)
    except FileNotFoundError:
        from .packing import MANIFEST, PLAN

        if (root / MANIFEST).is_file():  # not a pack's (`is_packed` said so)
            raise DatasetError(
                f"{str(root / MANIFEST)!r} is not a manifest dali-loader wrote (corrupt, or "
                "another tool's): pack the data set again"
            ) from None
        if (root / PLAN).is_file():
            raise DatasetError(
                f"{str(root)!r} holds an unfinished `dali-loader pack` (no manifest yet): "
                "rerun the same pack command to finish it"
            ) from None
        raise DatasetError(
            f"dataset root {str(root)!r} has no class folders; lay it out as "
            "root/<class_name>/<image>.jpg, one sub-folder per class"
        ) from None
    samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    empty = sorted(set(classes) - {classes[label] for _, label in samples})
    if empty:
        raise DatasetError(
            f"class folders without images under {str(root)!r}: {', '.join(empty[:5])}"
            f"{' ...' if len(empty) > 5 else ''}; supported extensions are "
            f"{', '.join(IMG_EXTENSIONS)} (any case). Remove the empty folders or add images."
        )
    return SampleIndex(
        paths=tuple(path for path, _ in samples),
        labels=tuple(label for _, label in samples),
        classes=list(classes),
        class_to_idx=dict(class_to_idx),
        root=str(root),
    )


def index_pairs(paths: Sequence[str], labels: Sequence[int]) -> SampleIndex:
    """Index explicit samples; classes are then the label values as strings, "0" .. str(max).

    Paths and labels may be lists, numpy arrays, torch tensors or pandas columns.
    """
    paths, labels = _as_list(paths), _as_list(labels)
    if len(paths) != len(labels):
        raise DatasetError(
            f"got {len(paths)} paths but {len(labels)} labels; pass one label per path"
        )
    if not paths:
        raise DatasetError("the (paths, labels) source is empty; pass at least one sample")
    bad = [
        label
        for label in labels
        if not isinstance(label, numbers.Integral) or isinstance(label, bool) or label < 0
    ]
    if bad:
        raise DatasetError(
            f"labels must be non-negative integers, got {bad[0]!r}; map class names to "
            "0 .. num_classes - 1 first"
        )
    not_paths = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if not_paths:
        raise DatasetError(f"paths must be strings or path objects, got {not_paths[0]!r}")
    count = int(max(labels)) + 1
    if count > _MANY_CLASSES and count > 10 * len(labels):
        raise DatasetError(
            f"labels go up to {count - 1:,} for {len(labels):,} samples: classes are 0 .. the "
            f"largest label, so that would make {count:,} classes. Map the labels to "
            "0 .. num_classes - 1 first"
        )
    classes = [str(i) for i in range(count)]
    cwd = os.getcwd()
    return SampleIndex(
        paths=tuple(os.path.join(cwd, os.fspath(p)) for p in paths),  # absolute, as above
        labels=tuple(int(label) for label in labels),
        classes=classes,
        class_to_idx={name: i for i, name in enumerate(classes)},
    )


# Above this many classes (and ten per sample), a label is a mistake, not a class: a million
# class names cost ~100 MB and seconds to build.
_MANY_CLASSES = 1_000_000


def _as_list(values: Sequence[Any]) -> list[Any]:
    """A list of Python values from a list, tuple, numpy array, torch tensor or pandas column."""
    tolist = getattr(values, "tolist", None)
    return list(tolist() if callable(tolist) else values)


def _refuse_repeated_folders(root: Path) -> None:
    """A folder reached twice through symbolic links (a link loop, or two links to one folder)
    would repeat its images in every epoch: refuse it, naming both places."""
    seen: dict[str, str] = {}
    for folder, _, _ in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            loop = Path(folder).is_relative_to(seen[real])
            raise DatasetError(
                f"{folder} is the folder {seen[real]} again, through a symbolic link"
                f"{' loop' if loop else ''}: its images would be read "
                f"{'over and over' if loop else 'twice'}. Remove the link, or make it a copy."
            )
        seen[real] = folder
