"""Bad input fails at create_loader with a message that names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dali_loader import BackendUnavailableError, ConfigError, DatasetError, backends, create_loader


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"does not exist; check the path"):
        create_loader(tmp_path / "nope", backend="torchvision")


def test_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="is not a directory"):
        create_loader(tmp_path / "file.jpg", backend="torchvision")


def test_root_without_class_folders(tmp_path: Path) -> None:
    (tmp_path / "loose.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"no class folders.*root/<class_name>/<image>\.jpg"):
        create_loader(tmp_path, backend="torchvision")


def test_class_folder_without_images(tmp_path: Path, small_folder: Path) -> None:
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    with pytest.raises(DatasetError, match=r"without images.*cats, dogs.*\.jpg"):
        create_loader(tmp_path, backend="torchvision")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -3}, "batch_size must be a positive integer, got -3"),
        ({"backend": "gpu"}, "unknown backend 'gpu'; choose one of 'auto', 'dali'"),
        ({"scale": (0.5, 1.5)}, r"scale must satisfy 0 < min <= max <= 1"),
        ({"scale": (0.9, 0.1)}, r"scale must satisfy"),
        ({"ratio": (0.0, 1.0)}, r"ratio must satisfy 0 < min <= max"),
        ({"flip_prob": 1.5}, r"flip_prob is a probability in \[0, 1\], got 1.5"),
        ({"rotate_degrees": 270}, r"rotate_degrees must be in \[0, 180\]"),
        ({"std": (0.2, 0.0, 0.2)}, "std must be positive"),
        ({"mean": (124.0, 116.0, 104.0)}, "divide 0..255 values by 255"),
        ({"mean": (0.5, 0.5)}, "mean needs one value per RGB channel"),
        ({"dtype": torch.int64}, "dtype must be torch.float32, torch.float16 or torch.bfloat16"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"image_size": 224.0}, r"image_size is an int or a \(height, width\) pair, got 224.0"),
        ({"image_size": (224, 224, 3)}, "image_size is an int or a"),
        ({"shard_id": 1}, "pass shard_id and num_shards together"),
        ({"shard_id": 2, "num_shards": 2}, r"shard_id must be in \[0, num_shards\)"),
        ({"num_threads": -1}, "num_threads must be a positive integer"),
        ({"backend": "dali-cpu", "num_threads": 0}, "num_threads must be a positive integer"),
        ({"backend": "dali-cpu", "device": "cuda"}, "backend='dali-cpu' delivers CPU tensors"),
    ],
)
def test_out_of_range_arguments(small_folder: Path, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    kwargs.setdefault("backend", "torchvision")
    with pytest.raises(ConfigError, match=message):
        create_loader(small_folder, **kwargs)


def test_dali_without_cuda_says_what_to_use(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"torch sees none.*backend='dali-cpu'"):
        create_loader(small_folder, backend="dali")


@pytest.mark.parametrize("backend", ["dali", "dali-cpu"])
def test_dali_not_installed_says_how_to_install(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    monkeypatch.setattr(backends, "dali_installed", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'dali-loader\[cuda12\]'"):
        create_loader(small_folder, backend=backend)


def test_auto_picks_and_logs_why(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    with caplog.at_level("INFO", logger="dali_loader"):
        loader = create_loader(small_folder, backend="auto", num_threads=0)
    assert loader.backend == "torchvision"
    assert "backend='auto' chose 'torchvision': no CUDA GPU visible" in caplog.text
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "dali_installed", lambda: False)
    chosen, why = backends.pick_auto()
    assert chosen == "torchvision"
    assert "CUDA is available but DALI is not installed" in why


def test_paths_and_labels_source(small_folder: Path) -> None:
    paths = sorted(str(p) for p in small_folder.rglob("*.jpg"))
    loader = create_loader(
        (paths, [0] * 10 + [2] * 11), backend="torchvision", num_threads=0, batch_size=8
    )
    assert loader.classes == ["0", "1", "2"]
    assert sum(len(labels) for _, labels in loader) == 21
    with pytest.raises(DatasetError, match="got 21 paths but 3 labels"):
        create_loader((paths, [0, 1, 2]), backend="torchvision")
    with pytest.raises(DatasetError, match="labels must be non-negative integers, got -1"):
        create_loader((paths[:1], [-1]), backend="torchvision")
    with pytest.raises(DatasetError, match="source is empty"):
        create_loader(([], []), backend="torchvision")
