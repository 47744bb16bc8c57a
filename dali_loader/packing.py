"""`dali-loader pack` (`dali_loader.pack`): an image folder as WebDataset tar shards, and
reading them back.

Layout of OUT:
    shard-000000.tar   WebDataset: per sample `{key}.{ext}` (the image bytes) and `{key}.cls`
    shard-000000.idx   DALI's `wds2idx` index (v1.2), so `fn.readers.webdataset` reads it too
    shard-000000.json  written last: samples, labels, bytes, sha256; marks the shard complete
    plan.json          what will be packed where; a rerun checks it and finishes the job
    manifest.json      written last of all: classes, counts per shard, checksums

Samples are packed in a seeded random order, so every shard mixes the classes. Bad files follow
the same policy as the loader; files DALI would misread are packed as their converted PNG copy.
A shard is written under a temporary name and renamed only when whole, so an interrupted pack
never leaves a half-written shard that looks complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from .cache import cache_dir, file_stamp, write_atomic
from .check import apply_policy, check_dataset, check_policy
from .errors import DatasetError
from .forking import forking
from .index import SampleIndex, ShardLocations, Source, build_index
from .spec import DEFAULT_MAX_PIXELS

FORMAT = "dali-loader/webdataset"
VERSION = 2  # 2: each sample's upright (width, height) in the shard's json
MANIFEST = "manifest.json"
PLAN = "plan.json"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def pack(
    source: Source,
    out: str | os.PathLike[str],
    *,
    shard_size: int = 1 << 30,
    seed: int = 0,
    on_bad_file: str = "raise",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Pack the image folder `source` into shards under `out`; rerun to finish an interrupted
    pack. Returns the manifest's path."""
    out = Path(out)
    check_policy(on_bad_file)
    index = build_index(source)
    report = check_dataset(index, max_pixels=max_pixels, progress=progress)
    index = apply_policy(index, report, on_bad_file)
    plan = _plan(index, report.copies, shard_size, seed)
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / PLAN
    if plan_file.exists():
        if json.loads(plan_file.read_text()) != plan:
            raise DatasetError(
                f"{out} holds a pack of another source or settings; remove it or pack into "
                "another folder"
            )
    else:
        write_atomic(plan_file, json.dumps(plan))
    for stale in out.glob("*.partial"):  # an interrupted run's (a Ctrl-C inside a temp file's
        stale.unlink(missing_ok=True)  # creation leaves it even there): this run writes anew
    todo = [k for k, shard in enumerate(plan["shards"]) if not _complete(out, shard)]
    total = sum(len(plan["shards"][k]["samples"]) for k in todo)
    processes = workers or max(1, len(os.sched_getaffinity(0)))
    try:
        with (
            ProcessPoolExecutor(processes, initializer=_die_with_parent) as pool,
            tqdm(total=total, desc=f"packing {out}", unit="img", disable=not progress) as bar,
        ):
            with forking():  # the first submit starts the processes
                jobs = [pool.submit(_write_shard, out, plan["shards"][k]) for k in todo]
            try:
                for job in jobs:
                    bar.update(job.result())
            except BaseException:
                for job in jobs:
                    job.cancel()
                raise
    except OSError as error:
        for partial in out.glob("*.partial"):
            partial.unlink(missing_ok=True)
        if error.errno != errno.ENOSPC:
            raise
        left = sum(s["stamp"][0] for k in todo for s in plan["shards"][k]["samples"])
        raise DatasetError(
            f"{out} ran out of space while packing (about {left / 2**30:.1f} GiB was left to "
            f"write, {shutil.disk_usage(out).free / 2**30:.1f} GiB is free now). The shards "
            "written so far are whole: free space, then rerun the same command to finish"
        ) from error
    shards = [json.loads((out / f"{s['name']}.json").read_text()) for s in plan["shards"]]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "seed": seed,
        "classes": list(index.classes),
        "num_samples": len(index),
        "skipped_bad_files": report.bad,
        "shards": [{k: v for k, v in s.items() if k != "labels"} for s in shards],
    }
    write_atomic(out / MANIFEST, json.dumps(manifest, indent=1))
    return out / MANIFEST


def _die_with_parent() -> None:
    """A pool worker whose parent is killed (kill -9, the OOM killer) stops too, instead of
    writing shards for no one (Linux; elsewhere it outlives the parent as before)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def is_packed(path: str | os.PathLike[str]) -> bool:
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return bool(json.loads(manifest.read_text()).get("format") == FORMAT)
    except ValueError:
        return False


def index_packed(root: str | os.PathLike[str]) -> SampleIndex:
    """The samples of a packed data set, with every shard checked against its checksum."""
    root = Path(root).absolute()  # shards are opened later, maybe in another directory
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("version") != VERSION:
        raise DatasetError(f"{root} was packed by another dali-loader version; pack it again")
    shards, shard_ids, offsets, sizes, labels, names, dims = [], [], [], [], [], [], []
    for number, shard in enumerate(manifest["shards"]):
        tar = root / f"{shard['name']}.tar"
        _verify(tar, shard)
        meta = json.loads((root / f"{shard['name']}.json").read_text())
        entries = _read_idx(root / f"{shard['name']}.idx")
        counts = {len(entries), len(meta["labels"]), len(meta["image_sizes"]), shard["samples"]}
        if len(counts) != 1:
            raise DatasetError(f"{tar}: index and manifest disagree; pack the data set again")
        shards.append(str(tar))
        for (name, offset, size), label in zip(entries, meta["labels"], strict=True):
            shard_ids.append(number)
            offsets.append(offset)
            sizes.append(size)
            labels.append(label)
            names.append(f"{tar}:{name}")
        dims += meta["image_sizes"]
    classes = list(manifest["classes"])
    return SampleIndex(
        paths=tuple(names),
        labels=tuple(labels),
        classes=classes,
        class_to_idx={name: i for i, name in enumerate(classes)},
        root=str(root),
        locations=ShardLocations(
            shards=tuple(shards),
            shard_ids=np.asarray(shard_ids, dtype=np.int32),
            offsets=np.asarray(offsets, dtype=np.int64),
            sizes=np.asarray(sizes, dtype=np.int64),
        ),
        sizes=np.asarray(dims, dtype=np.int32).reshape(len(names), 2),
    )


def _plan(index: SampleIndex, copies: dict[str, str], shard_size: int, seed: int) -> dict[str, Any]:
    assert index.sizes is not None, "a checked index: its sizes go into the shards"
    """Which sample goes to which shard, in a seeded random order; fully determined by the
    source's files (path, size, mtime), so a rerun can tell whether it is the same job."""
    order = np.random.default_rng(seed).permutation(len(index))
    shards: list[dict[str, Any]] = []
    filled = shard_size
    for number, i in enumerate(order.tolist()):
        path = copies.get(index.paths[i], index.paths[i])
        stamp = file_stamp(path)
        if stamp is None:
            raise DatasetError(f"{path} disappeared while packing")
        if filled + stamp[0] > shard_size and (not shards or shards[-1]["samples"]):
            shards.append({"name": f"shard-{len(shards):06d}", "samples": []})
            filled = 0
        ext = Path(path).suffix.lower().lstrip(".") or "img"
        shards[-1]["samples"].append(
            {
                "key": f"{number:09d}",
                "path": path,
                "ext": ext,
                "label": index.labels[i],
                "image_size": index.sizes[i].tolist(),
                "stamp": stamp,
            }
        )
        filled += stamp[0] + 1024  # a tar header and padding per member, roughly
    return {
        "format": FORMAT,
        "version": VERSION,
        "shard_size": shard_size,
        "seed": seed,
        "shards": shards,
    }


def _complete(out: Path, shard: dict[str, Any]) -> bool:
    meta, tar = out / f"{shard['name']}.json", out / f"{shard['name']}.tar"
    if not meta.exists() or not tar.exists():
        return False
    return bool(json.loads(meta.read_text())["bytes"] == tar.stat().st_size)


def _write_shard(out: Path, shard: dict[str, Any]) -> int:
    """Write one shard (tar, then its index, then its json, each renamed when whole)."""
    name = shard["name"]
    partial = out / f"{name}.tar.partial"
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in shard["samples"]:
            with open(sample["path"], "rb") as f:
                data = f.read()
            if file_stamp(sample["path"]) != sample["stamp"]:  # its size is the check's
                raise DatasetError(
                    f"{sample['path']} changed while it was being packed (its check is stale): "
                    f"pack again into an empty folder once the data set is still"
                )
            _add(tar, f"{sample['key']}.{sample['ext']}", data)
            _add(tar, f"{sample['key']}.cls", str(sample["label"]).encode())
    with tarfile.open(partial) as tar:  # read back for the data offsets tarfile chose
        members = [m for m in tar.getmembers() if m.isfile()]
    entries = list(zip(members[::2], members[1::2], strict=True))
    index_lines = [f"v1.2 {len(entries)}"]
    for image, label in entries:
        ext = image.name.split(".", 1)[1]
        index_lines.append(
            f"{ext} {image.offset_data} {image.size} {image.name} "
            f"cls {label.offset_data} {label.size} {label.name}"
        )
    write_atomic(out / f"{name}.idx", "\n".join(index_lines) + "\n")
    os.replace(partial, out / f"{name}.tar")
    tar_path = out / f"{name}.tar"
    meta = {
        "name": name,
        "samples": len(entries),
        "bytes": tar_path.stat().st_size,
        "sha256": _sha256(tar_path),
        "labels": [s["label"] for s in shard["samples"]],
        "image_sizes": [s["image_size"] for s in shard["samples"]],
    }
    write_atomic(out / f"{name}.json", json.dumps(meta))
    return len(entries)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    tar.addfile(info, io.BytesIO(data))


def _read_idx(idx: Path) -> list[tuple[str, int, int]]:
    """(image member name, data offset, size) per sample, from a `wds2idx` v1.2 index."""
    try:
        lines = idx.read_text().splitlines()
        version, count = lines[0].split()
        entries = []
        for line in lines[1 : 1 + int(count)]:
            fields = line.split()
            components = [fields[k : k + 4] for k in range(0, len(fields), 4)]
            _, offset, size, name = next(c for c in components if c[0] != "cls")
            entries.append((name, int(offset), int(size)))
    except (OSError, ValueError, StopIteration) as error:
        raise DatasetError(f"{idx} is unreadable ({error}); pack the data set again") from None
    if version != "v1.2":
        raise DatasetError(f"{idx} is index format {version}, not v1.2; pack the data set again")
    return entries


def _verify(tar: Path, shard: dict[str, Any]) -> None:
    """Size always; sha256 once per (size, mtime), cached like the dataset check."""
    stamp = file_stamp(str(tar))
    if stamp is None:
        raise DatasetError(f"shard {tar} is missing; pack the data set again")
    if stamp[0] != shard["bytes"]:
        raise DatasetError(
            f"shard {tar} is {stamp[0]:,} bytes, the manifest says {shard['bytes']:,}: it is "
            "truncated or was modified; pack the data set again"
        )
    name = f"{tar.resolve()}|{stamp}|{shard['sha256']}".encode(errors="surrogateescape")
    key = hashlib.sha1(name).hexdigest()
    marker = cache_dir() / "verified" / key
    if marker.exists():
        return
    if _sha256(tar) != shard["sha256"]:
        raise DatasetError(
            f"shard {tar} does not match its checksum in the manifest: it was modified or "
            "corrupted; pack the data set again"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
