"""Packed data sets: pack, read back on every backend, resume a pack, refuse damaged shards."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import ImageFolder

from dali_loader import DatasetError, create_loader
from dali_loader.cli import main
from dali_loader.packing import pack

from .conftest import IMAGENET_MEAN, IMAGENET_STD, decode_indices, write_index_folder
from .helpers import truncate_under


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, small_folder: Path) -> Path:
    out = tmp_path_factory.mktemp("packed") / "wds"
    assert main(["pack", str(small_folder), str(out), "--shard-size", "8KB"]) == 0
    return out


def read_all(loader) -> tuple[list[int], list[int]]:  # type: ignore[no-untyped-def]
    seen, labels = [], []
    for images, batch_labels in loader:
        seen += decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
        labels += batch_labels.tolist()
    return seen, labels


def test_check_command_verifies_a_packed_set(
    packed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", str(packed)]) == 0
    assert "21 samples in" in capsys.readouterr().out


def test_pack_layout_and_manifest(packed: Path, small_folder: Path) -> None:
    manifest = json.loads((packed / "manifest.json").read_text())
    assert manifest["format"] == "dali-loader/webdataset" and manifest["num_samples"] == 21
    assert manifest["classes"] == ImageFolder(str(small_folder)).classes
    assert len(manifest["shards"]) > 2  # 8 KB shards: several
    assert sum(s["samples"] for s in manifest["shards"]) == 21
    for shard in manifest["shards"]:
        assert (packed / f"{shard['name']}.tar").stat().st_size == shard["bytes"]
        assert len(shard["sha256"]) == 64
        assert (packed / f"{shard['name']}.idx").read_text().startswith("v1.2 ")
    assert not list(packed.glob("*.partial"))


def test_packed_data_set_reads_back_exactly_once_per_epoch(
    packed: Path, small_folder: Path, backend: str
) -> None:
    targets = ImageFolder(str(small_folder)).targets
    loader = create_loader(
        packed,
        backend=backend,
        train=False,
        shuffle=True,
        batch_size=4,
        image_size=16,
        num_threads=2,
    )
    assert loader.classes == ImageFolder(str(small_folder)).classes
    orders = []
    for _ in range(2):
        seen, labels = read_all(loader)
        assert sorted(seen) == list(range(21))
        assert labels == [targets[i] for i in seen]
        orders.append(seen)
    assert orders[0] != orders[1]  # a uniform shuffle of the whole set each epoch, as for folders


def test_packed_resume_mid_epoch(packed: Path, backend: str) -> None:
    def make():  # type: ignore[no-untyped-def]
        return create_loader(
            packed, backend=backend, train=False, batch_size=4, image_size=16, num_threads=1
        )

    whole = read_all(make())[0]
    cut = make()
    iterator = iter(cut)
    next(iterator), next(iterator)
    restored = make()
    restored.load_state_dict(json.loads(json.dumps(cut.state_dict())))
    assert read_all(restored)[0] == whole[8:]


def test_dali_webdataset_reader_reads_our_shards_and_indexes(packed: Path) -> None:
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    manifest = json.loads((packed / "manifest.json").read_text())
    names = [s["name"] for s in manifest["shards"]]
    pipe = Pipeline(batch_size=21, num_threads=1, device_id=None)
    with pipe:
        image, label = fn.readers.webdataset(
            paths=[str(packed / f"{n}.tar") for n in names],
            index_paths=[str(packed / f"{n}.idx") for n in names],
            ext=["jpg", "cls"],
            missing_component_behavior="error",
        )
        pipe.set_outputs(fn.decoders.image(image, output_type=types.RGB), label)
    pipe.build()
    images, labels = pipe.run()
    reference = ImageFolder(str(manifest["source"]))
    got = Counter(int(bytes(np.asarray(labels.at(i))).decode()) for i in range(21))
    assert got == Counter(reference.targets)
    assert np.asarray(images.at(0)).shape == (48, 48, 3)


def test_interrupted_pack_resumes(tmp_path: Path, small_folder: Path) -> None:
    out = tmp_path / "wds"
    pack(small_folder, out, shard_size=8 << 10, progress=False)
    reference = json.loads((out / "manifest.json").read_text())
    # What an interrupted run leaves: a shard never finished, one half written, no manifest.
    first, second = reference["shards"][0]["name"], reference["shards"][1]["name"]
    for suffix in (".json", ".tar", ".idx"):
        (out / f"{first}{suffix}").unlink()
    (out / f"{second}.json").unlink()
    (out / f"{second}.tar").write_bytes(b"half a shard")
    (out / f"{first}.tar.partial").write_bytes(b"garbage")
    (out / "tmpk2x9_q1a.partial").write_bytes(b"")  # a Ctrl-C inside mkstemp leaves one
    (out / "manifest.json").unlink()
    with pytest.raises(DatasetError):
        create_loader(out, backend="torchvision")  # not a packed data set until complete
    pack(small_folder, out, shard_size=8 << 10, progress=False)
    assert json.loads((out / "manifest.json").read_text()) == reference
    assert not list(out.glob("*.partial"))
    assert sorted(
        read_all(
            create_loader(out, backend="torchvision", train=False, image_size=16, num_threads=0)
        )[0]
    ) == list(range(21))


def test_rerun_with_another_source_is_refused(tmp_path: Path, small_folder: Path) -> None:
    out = tmp_path / "wds"
    pack(small_folder, out, progress=False)
    other = write_index_folder(tmp_path / "other", [2, 2])
    with pytest.raises(DatasetError, match="holds a pack of another source"):
        pack(other, out, progress=False)


def test_damaged_shards_get_a_clear_error(tmp_path: Path, small_folder: Path) -> None:
    out = tmp_path / "wds"
    pack(small_folder, out, shard_size=8 << 10, progress=False)
    shard = out / "shard-000001.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 0xFF  # same size, one byte changed
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"shard-000001\.tar does not match its checksum"):
        create_loader(out, backend="torchvision")
    assert main(["check", str(out)]) == 2  # the command says so too, as an error
    shard.write_bytes(bytes(data[:1000]))
    with pytest.raises(DatasetError, match=r"is 1,000 bytes, the manifest says .*truncated"):
        create_loader(out, backend="torchvision")


def test_a_shard_truncated_while_training_is_named(
    tmp_path: Path, small_folder: Path, backend: str
) -> None:
    out = tmp_path / "wds"
    pack(small_folder, out, shard_size=8 << 10, progress=False)
    loader = create_loader(out, backend=backend, batch_size=4, image_size=16, num_threads=2)
    shard = out / "shard-000001.tar"
    message = str(truncate_under(loader, shard, keep=1000))
    assert "changed after the loader checked them" in message and str(shard) in message


def test_a_corrupt_manifest_is_named_not_called_an_unfinished_pack(
    tmp_path: Path, small_folder: Path
) -> None:
    out = tmp_path / "packed"
    pack(small_folder, out, shard_size=8 << 10, progress=False)
    (out / "manifest.json").write_text('{"format": "dali-loader/webdat')  # cut short
    with pytest.raises(DatasetError, match="not a manifest dali-loader wrote"):
        create_loader(out, backend="torchvision")


def test_pack_follows_the_bad_file_policy(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [3, 3])
    (root / "class_00" / "empty.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="1 file"):
        pack(root, tmp_path / "a", progress=False)
    manifest = json.loads(
        pack(root, tmp_path / "b", on_bad_file="skip", progress=False).read_text()
    )
    assert manifest["num_samples"] == 6
    assert list(manifest["skipped_bad_files"]) == [str(root / "class_00" / "empty.jpg")]


def test_first_batch_of_a_packed_class_sorted_set_mixes_classes(
    sorted_folder: Path, tmp_path: Path, backend: str
) -> None:
    # Packed sets are shuffled like folders (a uniform permutation of the whole set), not by
    # shard order plus a buffer: the first batch spans every class.
    out = tmp_path / "wds"
    pack(sorted_folder, out, shard_size=64 << 10, progress=False)
    loader = create_loader(out, backend=backend, batch_size=64, image_size=8, num_threads=2)
    _, labels = next(iter(loader))
    counts = Counter(labels.tolist())
    assert len(counts) == 10 and max(counts.values()) <= 16


def _alive_in_session(session: int) -> list[int]:
    """The processes (not zombies) of session `session`: a killed pack's and its workers'."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, sid = fields[0], int(fields[3])  # after "(comm)": state ppid pgrp session
        if sid == session and state != "Z":
            alive.append(int(entry.name))
    return alive


def test_a_pack_killed_with_sigkill_leaves_no_worker_and_resumes(tmp_path: Path) -> None:
    """kill -9 of `dali-loader pack`: its pool workers die with it (they no longer write shards
    for no one), and the same command then finishes the set, as a run never killed."""
    import signal
    import subprocess
    import sys
    import time

    from .conftest import write_index_folder

    source = write_index_folder(tmp_path / "src", [300, 300])
    out = tmp_path / "packed"
    command = [sys.executable, "-m", "dali_loader.cli", "pack", str(source), str(out)]
    command += ["--shard-size", "16KB", "--workers", "2"]
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.tar")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "pack finished before it could be killed: give it more to do"
    workers = [pid for pid in _alive_in_session(proc.pid) if pid != proc.pid]
    assert workers, "no pool worker to orphan"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _alive_in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_in_session(proc.pid) == []
    assert not (out / "manifest.json").exists()
    pack(source, out, shard_size=16 << 10, progress=False)
    reference = pack(source, tmp_path / "reference", shard_size=16 << 10, progress=False)
    resumed, whole = (json.loads(p.read_text()) for p in (out / "manifest.json", reference))
    assert resumed["shards"] == whole["shards"] and resumed["num_samples"] == 600
