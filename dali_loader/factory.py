"""`create_loader`: one call that resolves the backend, the device and the shard, then builds."""

from __future__ import annotations

import contextlib
import inspect
import logging
import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from .backends import default_cuda_device, default_num_threads, resolve_backend
from .base import TORCH_DTYPES, BaseLoader
from .check import check_policy
from .errors import ConfigError, DatasetError
from .index import SampleIndex, Source
from .ops import Op, is_random
from .sampler import num_batches
from .source import open_source
from .spec import DEFAULT_MAX_PIXELS, LoaderSpec

logger = logging.getLogger("dali_loader")


def create_loader(
    source: Source,
    batch_size: int = 256,
    train: bool = True,
    backend: str = "auto",
    image_size: int | Sequence[int] = 224,
    shuffle: bool | None = None,
    drop_last: bool = False,
    seed: int = 0,
    num_threads: int | None = None,
    device: str | int | torch.device | None = None,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip_prob: float = 0.5,
    rotate_degrees: float = 0.0,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    shard_id: int | None = None,
    num_shards: int | None = None,
    on_bad_file: str = "raise",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    transform: object = None,
    as_is: bool = False,
    num_workers: int | None = None,
    prefetch_factor: int | None = None,
    pin_memory: bool = True,
    persistent_workers: bool = True,
    sampler: object = None,
    batch_sampler: object = None,
    collate_fn: object = None,
) -> BaseLoader:
    """A DataLoader-like loader of `(images, labels)` batches from an image folder.

    Args:
        source: an ImageFolder-style root (`root/<class>/<image>`), a folder written by
            `dali-loader pack`, or `(paths, labels)`.
        batch_size: samples per batch; the last batch is partial unless `drop_last`.
        train: random-resized crop, flip and rotation; otherwise resize + center crop.
        backend: "dali" (GPU), "dali-cpu", "torchvision", or "auto" (dali when CUDA and DALI
            are present, else torchvision; the choice is logged on the "dali_loader" logger).
        image_size: output height and width (an int for a square).
        shuffle: a fresh uniform permutation each epoch; defaults to `train`.
        drop_last: drop the final partial batch, as DataLoader does.
        seed: with the epoch, fixes the order and the augmentation.
        num_threads: DALI threads or DataLoader workers; default: this rank's share of the
            usable cores (all of them in one process; under torchrun, cores / LOCAL_WORLD_SIZE).
        device: where batches land. Default: the local rank's GPU for "dali" (and for
            "torchvision" when CUDA is available), else the CPU.
        scale, ratio, flip_prob, rotate_degrees: torchvision's meanings (rotation angle uniform
            in [-rotate_degrees, rotate_degrees]).
        mean, std: normalization on the 0..1 scale.
        dtype: float32, float16 or bfloat16 images.
        channels_last: images in torch.channels_last memory format.
        shard_id, num_shards: this rank's shard; default: torch.distributed's rank and world
            size when it is initialized, else one shard.
        on_bad_file: files no backend can decode (see `dali_loader check`): "raise" before the
            first batch, naming them, or "skip" them (logged; listed in `loader.bad_files`).
        max_pixels: larger images count as bad files (decompression bombs).

    `transform`: a torchvision Compose (v1 or v2), or one transform, instead of the recipe
    keywords: compiled to the loader's ops and run by every backend (`dali_loader.transforms`
    says which transforms are taken); the recipe keywords (train, image_size, scale, ratio,
    flip_prob, rotate_degrees, mean, std, dtype) are then left at their defaults (one set to
    another value is refused; one set to its default cannot be told apart, and the transform
    decides). `as_is=True` (backend="torchvision" only) calls the Compose itself on each
    sample instead, as DataLoader(ImageFolder(root, transform)) does: for what cannot be
    compiled; slower, and batches come out as the Compose makes them.

    DataLoader's own keywords, for a ported script: `num_workers` is `num_threads`;
    `prefetch_factor` is how many batches each worker (or DALI's pipeline) prepares ahead
    (default 2); `pin_memory` and `persistent_workers` are taken and change nothing (batches
    land on the device already, through pinned memory where they cross to a GPU; workers and
    DALI's threads always persist between epochs). `sampler`, `batch_sampler` and `collate_fn`
    are refused, saying what to use instead.
    """
    _refuse_dataloader_only(batch_size, sampler, batch_sampler, collate_fn)
    ops: tuple[Op, ...] | None = None  # the keyword recipe
    if as_is and (transform is None or backend != "torchvision"):
        raise ConfigError(
            "as_is=True calls transform= itself on each sample, in DataLoader workers: pass "
            "transform=T and backend='torchvision'"
        )
    if transform is not None:
        from .transforms import compile_transform

        given = {
            "train": train,
            "image_size": image_size,
            "scale": scale,
            "ratio": ratio,
            "flip_prob": flip_prob,
            "rotate_degrees": rotate_degrees,
            "mean": mean,
            "std": std,
            "dtype": dtype,
        }
        if as_is:  # the Compose is not read: train says only whether to shuffle by default
            del given["train"]
        defaults = inspect.signature(create_loader).parameters  # one place for the defaults
        changed = [name for name, value in given.items() if _differs(value, defaults[name].default)]
        if changed:
            raise ConfigError(
                f"transform= and the recipe keywords ({', '.join(changed)}) say the same thing "
                "twice: pass the transform, or the keywords"
            )
        if not as_is:
            compiled = compile_transform(transform)
            ops, dtype = compiled.ops, TORCH_DTYPES[compiled.dtype]
            train = any(is_random(op) for op in ops)  # shuffled by default when augmented
    if num_workers is not None:
        if num_threads is not None and num_threads != num_workers:
            raise ConfigError(
                f"num_workers={num_workers!r} and num_threads={num_threads!r} are one setting "
                "(DataLoader's name and ours): pass one of them"
            )
        num_threads = num_workers
    depth = 2 if prefetch_factor is None else prefetch_factor
    if not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 1:
        raise ConfigError(f"prefetch_factor must be a positive integer, got {prefetch_factor!r}")
    check_policy(on_bad_file)
    chosen = resolve_backend(backend)
    shard_id, num_shards = _resolve_shard(shard_id, num_shards)
    spec = LoaderSpec(
        batch_size=batch_size,
        train=train,
        image_size=_size(image_size),
        shuffle=train if shuffle is None else shuffle,
        drop_last=drop_last,
        seed=seed,
        scale=_pair(scale, "scale"),
        ratio=_pair(ratio, "ratio"),
        flip_prob=flip_prob,
        rotate_degrees=rotate_degrees,
        mean=_triple(mean, "mean"),
        std=_triple(std, "std"),
        dtype=_dtype_name(dtype),
        channels_last=channels_last,
        shard_id=shard_id,
        num_shards=num_shards,
        ops=ops,
    )
    threads = default_num_threads() if num_threads is None else num_threads
    if (
        not isinstance(threads, numbers.Integral)
        or isinstance(threads, bool)
        or threads < 0
        or (threads == 0 and chosen != "torchvision")
    ):
        raise ConfigError(
            f"num_threads must be a positive integer (0 means no workers, torchvision only), "
            f"got {threads!r}"
        )
    threads = int(threads)
    target = _resolve_device(chosen, device)
    with _rank_zero_first():
        checked = open_source(
            source,
            on_bad_file=on_bad_file,
            max_pixels=max_pixels,
            probe_dali=chosen != "torchvision",
            device_id=target.index if chosen == "dali" else None,
            progress=shard_id == 0,
        )
    index = checked.index
    _refuse_disagreeing_ranks(index)
    logger.info(
        "dali_loader: backend=%s device=%s samples=%d classes=%d shard=%d/%d",
        chosen,
        target,
        len(index),
        len(index.classes),
        shard_id,
        num_shards,
    )
    loader: BaseLoader
    if chosen == "torchvision":
        from fallback import TorchvisionLoader

        # More workers than an epoch has batches would only idle (each one a process).
        workers = min(threads, num_batches(len(index), spec))
        loader = TorchvisionLoader(
            checked,
            spec,
            target,
            num_workers=workers,
            prefetch_factor=int(depth),
            as_is=transform if as_is else None,  # type: ignore[arg-type]
        )
    else:
        from .iterator import DaliLoader

        # DALI's threads work on the samples of one batch: more would only idle.
        threads = min(threads, spec.batch_size)
        loader = DaliLoader(
            checked, spec, target, num_threads=threads, prefetch_queue_depth=int(depth)
        )
    return loader


def _differs(value: object, default: object) -> bool:
    """Whether a keyword was set away from its default (arrays and tensors compared by value)."""
    values = _values(value)  # [] for a scalar
    if values or isinstance(default, tuple):
        return values != (list(default) if isinstance(default, tuple) else [default])
    return bool(value != default)


def _refuse_dataloader_only(
    batch_size: object, sampler: object, batch_sampler: object, collate_fn: object
) -> None:
    """DataLoader arguments with no meaning here: say what does their job instead."""
    if callable(batch_size) and not isinstance(batch_size, numbers.Integral):
        raise ConfigError(
            f"create_loader's second argument is batch_size, got a {type(batch_size).__name__}:"
            " pass a transform as transform=T (`dali_loader.transforms` says which pipelines "
            "are taken), or the augmentation as keywords (image_size, scale, ratio, flip_prob, "
            "rotate_degrees, mean, std; train=False for resize + center crop)"
        )
    if sampler is not None or batch_sampler is not None:
        raise ConfigError(
            "sampler and batch_sampler are not taken: the loader draws its own order (shuffle, "
            "seed, drop_last) and shards itself under torch.distributed (or shard_id and "
            "num_shards); to read a subset, pass (paths, labels) of that subset as the source"
        )
    if collate_fn is not None:
        raise ConfigError(
            "collate_fn is not taken: batches are already (images, labels) tensors on the "
            "device; transform them after the loop's `for images, labels in loader`"
        )


@contextlib.contextmanager
def _rank_zero_first() -> Iterator[None]:
    """Under torch.distributed, rank 0 checks the data set and the other ranks then read its
    cached verdicts, instead of every rank decoding every file."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    if dist.get_rank() != 0:
        dist.barrier()
        yield
        return
    try:
        yield
    finally:  # release the others even when the check failed: they will say why too
        dist.barrier()


def _refuse_disagreeing_ranks(index: SampleIndex) -> None:
    """Under torch.distributed every rank must deal from the same sample list, else shards
    overlap and miss samples without a word: compare them, refuse any difference."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    seen: list[tuple[int, str] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(seen, (len(index), index.sha1))
    if len(set(seen)) == 1:
        return
    ranks = "; ".join(
        f"rank {rank}: {entry[0]} samples ({entry[1][:12]})"
        for rank, entry in enumerate(seen)
        if entry is not None
    )
    raise DatasetError(
        f"the ranks see different data sets ({ranks}): files were added, removed or changed "
        "while they listed them, or their sources differ. Every rank must read the same "
        "samples; create the loaders again once the data set is still"
    )


def _resolve_shard(shard_id: int | None, num_shards: int | None) -> tuple[int, int]:
    if (shard_id is None) != (num_shards is None):
        raise ConfigError(
            f"pass shard_id and num_shards together (got shard_id={shard_id}, "
            f"num_shards={num_shards}), or neither to follow torch.distributed"
        )
    if shard_id is not None and num_shards is not None:
        return shard_id, num_shards
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _resolve_device(backend: str, device: str | int | torch.device | None) -> torch.device:
    if device is not None:
        device = _parse_device(device)
    if backend == "dali-cpu":
        if device is not None and device.type != "cpu":
            raise ConfigError(
                f"backend='dali-cpu' delivers CPU tensors, got device={device!r}; use "
                "backend='dali' for batches on the GPU"
            )
        return torch.device("cpu")
    if device is None:
        if backend == "dali" or torch.cuda.is_available():
            return default_cuda_device()
        return torch.device("cpu")
    target = device
    if backend == "dali" and target.type != "cuda":
        raise ConfigError(
            f"backend='dali' delivers GPU tensors, got device={device!r}; pass a CUDA device or "
            "use backend='dali-cpu'"
        )
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} asks for CUDA, but torch sees no GPU")
        if target.index is None:
            target = default_cuda_device()
    return target


def _parse_device(device: str | int | torch.device) -> torch.device:
    """A CPU or CUDA device from what torch accepts; anything else is a ConfigError."""
    try:
        if isinstance(device, numbers.Integral) and not isinstance(device, bool):
            target = torch.device("cuda", int(device))
        else:
            target = torch.device(device)  # type: ignore[arg-type]
    except (RuntimeError, TypeError, ValueError) as error:
        raise ConfigError(
            f"device={device!r} is not a device: pass 'cpu', 'cuda', 'cuda:1' or a GPU index"
        ) from error
    if target.type not in ("cpu", "cuda"):
        raise ConfigError(
            f"device={device!r}: batches can land on the CPU or a CUDA GPU, not on {target.type!r}"
        )
    return target


def _dtype_name(dtype: torch.dtype) -> str:
    for name, candidate in TORCH_DTYPES.items():
        if candidate == dtype:
            return name
    raise ConfigError(
        f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype!r}"
    )


def _size(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) from an int or a pair; LoaderSpec checks that they are integers."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        return int(image_size), int(image_size)
    sides = _values(image_size)
    if len(sides) != 2:
        raise ConfigError(f"image_size is an int or a (height, width) pair, got {image_size!r}")
    return sides[0], sides[1]


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    """A pair (a tuple, list, array or tensor); LoaderSpec checks that its values are numbers."""
    values = _values(value)
    if len(values) != 2:
        raise ConfigError(f"{name} must be a (min, max) pair, got {value!r}")
    return values[0], values[1]


def _values(value: object) -> list[Any]:
    """The items of a sequence, array or tensor as Python values; [] for anything else."""
    if isinstance(value, str):
        return []
    tolist = getattr(value, "tolist", None)
    try:
        return list(tolist() if callable(tolist) else value)  # type: ignore[arg-type]
    except TypeError:
        return []


def _triple(value: Sequence[float], name: str) -> tuple[float, float, float]:
    """One value per channel; LoaderSpec checks that they are numbers."""
    values = _values(value)
    if len(values) != 3:
        raise ConfigError(f"{name} needs one value per RGB channel, got {value!r}")
    return values[0], values[1], values[2]
