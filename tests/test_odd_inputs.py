"""Faults and odd inputs that once lost data or crashed, on both CPU backends."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import stat
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dali_loader import ConfigError, DatasetError, check_dataset, create_loader, pack
from dali_loader.cli import main

from .conftest import IMAGENET_MEAN, IMAGENET_STD, decode_indices, write_index_folder

CPU_BACKENDS = ["torchvision", "dali-cpu"]
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # pixels out on the 0..1 scale


def raw_pixels(root: Path, backend: str, size: int = 32) -> torch.Tensor:
    """The eval output of a one-image folder, on the 0..255 scale."""
    loader = create_loader(
        root, backend=backend, train=False, batch_size=1, image_size=size, num_threads=1, **RAW
    )
    images, _ = next(iter(loader))
    return images[0] * 255


def one_image_folder(root: Path, image: Image.Image, name: str, **save: object) -> Path:
    (root / "c").mkdir(parents=True)
    image.save(root / "c" / name, **save)
    return root


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("name", "pixels", "expected_mean"),
    [
        # A 0..65520 ramp: the scale maps 65535 to 255, so the mean is the ramp's mean / 257.
        ("ramp16.png", (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16), 127.5),
        ("ramp16.tif", (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16), 127.5),
        ("ramp_float.tif", (np.arange(64 * 64).reshape(64, 64) / 4095).astype(np.float32), 127.5),
    ],
)
def test_deep_grayscale_keeps_its_range(
    tmp_path: Path, backend: str, name: str, pixels: np.ndarray, expected_mean: float
) -> None:
    root = one_image_folder(tmp_path / "data", Image.fromarray(pixels), name)
    out = raw_pixels(root, backend)
    assert out.min() < 40 and out.max() > 215  # not clipped to white, nor to black
    assert abs(out.mean().item() - expected_mean) < 6  # the center crop of a ramp
    rows = out[0].mean(dim=1)
    assert (rows[1:] >= rows[:-1] - 1).all()  # still a ramp, top to bottom


def test_deep_grayscale_is_the_same_on_both_backends(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    root = one_image_folder(tmp_path / "data", Image.fromarray(ramp), "ramp.png")
    torchvision, dali = raw_pixels(root, "torchvision"), raw_pixels(root, "dali-cpu")
    assert (torchvision - dali).abs().max() <= 2


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("mode", ["1", "I;16", "P", "L"])
def test_images_with_a_transparency_entry_are_delivered(
    tmp_path: Path, backend: str, mode: str
) -> None:
    gray = Image.fromarray(((np.arange(32 * 32).reshape(32, 32) % 2) * 255).astype(np.uint8))
    image = gray if mode == "L" else gray.convert(mode)
    root = one_image_folder(tmp_path / "data", image, "t.png", transparency=1)
    report = check_dataset(root, probe_dali=backend != "torchvision", progress=False)
    assert not report.bad
    assert raw_pixels(root, backend).shape == (3, 32, 32)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_two_live_iterators_the_older_is_refused_the_newer_is_whole(
    small_folder: Path, backend: str
) -> None:
    loader = create_loader(
        small_folder, backend=backend, train=False, shuffle=True, batch_size=4, image_size=16
    )
    older = iter(loader)
    next(older)
    newer = iter(loader)
    first = next(newer)
    with pytest.raises(ConfigError, match="superseded"):
        next(older)
    seen = decode_indices(first[0], IMAGENET_MEAN, IMAGENET_STD)
    for images, _ in newer:
        seen += decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
    assert sorted(seen) == list(range(21))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_state_after_a_break_is_where_the_next_loop_starts(
    small_folder: Path, backend: str
) -> None:
    loader = create_loader(small_folder, backend=backend, batch_size=4, image_size=16)
    for k, _ in enumerate(loader):
        if k == 1:
            assert loader.state_dict()["batches_done"] == 2  # inside the loop: where it is
            break
    state = loader.state_dict()
    assert (loader.epoch, state["epoch"], state["batches_done"]) == (1, 1, 0)


def test_a_file_rewritten_in_place_with_its_old_mtime_is_checked_again(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [3])
    create_loader(root, backend="dali-cpu", batch_size=2, image_size=16)  # cached verdicts
    victim = next((root / "class_00").iterdir())
    before = victim.stat()
    victim.write_bytes(b"\0" * before.st_size)  # same size: corrupt in place
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the old mtime
    with pytest.raises(DatasetError, match=victim.name):
        create_loader(root, backend="dali-cpu", batch_size=2, image_size=16)


def test_a_shard_rewritten_in_place_fails_its_checksum_again(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [4])
    out = pack(root, tmp_path / "packed", progress=False).parent
    assert main(["check", str(out)]) == 0  # verified, and the verdict cached
    shard = next(out.glob("*.tar"))
    before = shard.stat()
    data = bytearray(shard.read_bytes())
    data[1024:1034] = b"\xff" * 10
    shard.write_bytes(bytes(data))
    os.utime(shard, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert main(["check", str(out)]) == 2  # the CLI's error exit, naming the shard
    with pytest.raises(DatasetError, match=shard.name):
        create_loader(out, backend="torchvision", batch_size=2, image_size=16)


def test_a_symlink_loop_is_refused_naming_it(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [2, 2])
    (root / "class_00" / "again").symlink_to(root / "class_00")
    with pytest.raises(DatasetError, match=r"again is the folder .*class_00 again.* loop"):
        create_loader(root, backend="torchvision", batch_size=2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_an_unwritable_cache_falls_back_with_one_warning(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from dali_loader import cache

    cache._usable.cache_clear()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("DALI_LOADER_CACHE", str(blocker / "cache"))  # cannot be a folder
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = write_index_folder(tmp_path / "data", [3])
    (root / "class_00" / "cmyk.jpg").write_bytes(_cmyk_jpeg())  # needs a converted copy
    with caplog.at_level(logging.WARNING, logger="dali_loader"):
        loader = create_loader(root, backend=backend, batch_size=2, image_size=16)
        assert sum(len(labels) for _, labels in loader) == 4
    warnings = [r for r in caplog.records if "cannot use the cache folder" in r.getMessage()]
    assert len(warnings) == 1 and "DALI_LOADER_CACHE" in warnings[0].getMessage()
    cache._usable.cache_clear()


def test_the_fallback_cache_is_removed_when_the_process_exits(tmp_path: Path) -> None:
    # Every process with an unusable cache folder left a temp cache behind: its verdicts and
    # a converted copy of every file that needs one.
    import subprocess
    import sys

    root = write_index_folder(tmp_path / "data", [3])
    (root / "class_00" / "cmyk.jpg").write_bytes(_cmyk_jpeg())  # needs a converted copy
    (tmp_path / "tmp").mkdir()
    (tmp_path / "a-file").write_text("")
    code = f"""
from dali_loader import create_loader
loader = create_loader({str(root)!r}, backend="dali-cpu", batch_size=2, image_size=16)
assert sum(len(labels) for _, labels in loader) == 4
"""
    environment = {
        **os.environ,
        "DALI_LOADER_CACHE": str(tmp_path / "a-file" / "cache"),  # cannot be a folder
        "TMPDIR": str(tmp_path / "tmp"),
    }
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=environment)
    assert list((tmp_path / "tmp").iterdir()) == []


def _cmyk_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("CMYK", (24, 24), (10, 200, 30, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def _full_disk(out: Path, shard: dict) -> int:  # type: ignore[type-arg]
    (out / f"{shard['name']}.tar.partial").write_bytes(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_pack_into_a_full_disk_says_so_and_leaves_no_partial_shard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dali_loader import packing as pack_module

    root = write_index_folder(tmp_path / "data", [4])
    monkeypatch.setattr(pack_module, "_write_shard", _full_disk)  # forked workers see it
    out = tmp_path / "packed"
    with pytest.raises(DatasetError, match=r"ran out of space.*rerun the same command"):
        pack(root, out, shard_size=4 << 10, progress=False, workers=1)
    assert not list(out.glob("*.partial"))
    with pytest.raises(DatasetError, match="unfinished `dali-loader pack`"):
        create_loader(out, backend="torchvision")


def test_pack_is_the_function_after_its_module_is_imported() -> None:
    import dali_loader
    import dali_loader.packing

    assert callable(dali_loader.pack) and dali_loader.pack is pack


def test_pack_writes_files_others_can_read(tmp_path: Path) -> None:
    root = write_index_folder(tmp_path / "data", [3])
    out = pack(root, tmp_path / "packed", progress=False).parent
    umask = os.umask(0)
    os.umask(umask)
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044 & ~umask, path


def test_a_small_dev_shm_is_refused_before_any_worker_starts(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from fallback import buffers

    real = shutil.disk_usage

    def small(path: str) -> object:
        usage = real(path)
        return usage._replace(free=64 << 20) if str(path) == "/dev/shm" else usage

    monkeypatch.setattr(buffers.shutil, "disk_usage", small)
    with pytest.raises(ConfigError, match=r"/dev/shm has 0.06 GiB free.*--shm-size="):
        create_loader(small_folder, backend="torchvision", batch_size=256, num_threads=2)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*63\)"),
        ({"seed": 2**64}, r"seed must be an integer in \[0, 2\*\*63\)"),
        ({"seed": 1.5}, "seed must be an integer, got 1.5"),
        ({"seed": None}, "seed must be an integer, got None"),
        ({"shard_id": 1.0, "num_shards": 2}, "shard_id must be an integer, got 1.0"),
        ({"num_threads": 2.5}, "num_threads must be a positive integer"),
        ({"device": "meta"}, "CPU or a CUDA GPU, not on 'meta'"),
        ({"device": "gpu7"}, "is not a device"),
        ({"image_size": True}, r"image_size is an int or a \(height, width\) pair, got True"),
        ({"flip_prob": float("nan")}, "flip_prob must be a finite number"),
        ({"mean": 0.5}, "mean needs one value per RGB channel"),
        ({"train": "yes"}, "train must be True or False"),
    ],
)
def test_bad_arguments_get_a_config_error_naming_them(
    small_folder: Path,
    backend: str,
    arguments: dict,
    message: str,  # type: ignore[type-arg]
) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loader(small_folder, backend=backend, **arguments)


def test_numpy_integers_are_taken_where_integers_are(small_folder: Path) -> None:
    loader = create_loader(
        small_folder,
        backend="torchvision",
        batch_size=np.int64(4),
        seed=np.int32(3),
        image_size=np.int64(16),
        num_threads=0,
    )
    assert (loader.batch_size, loader.spec.seed, loader.spec.image_size) == (4, 3, (16, 16))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_are_capped_at_what_an_epoch_can_use(small_folder: Path) -> None:
    loader = create_loader(small_folder, backend="torchvision", batch_size=8, num_threads=1000)
    assert loader._loader.num_workers == len(loader) == 3


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_paths_and_labels_from_numpy_torch_and_lists(small_folder: Path, backend: str) -> None:
    files = sorted(str(p) for p in small_folder.rglob("*.jpg"))
    labels = [int(Path(f).parent.name[-2:]) for f in files]
    for paths, targets in [
        (np.array(files), np.array(labels)),  # a pandas column's .to_numpy()
        (np.array(files, dtype=object), torch.tensor(labels)),
        (files, [np.int64(label) for label in labels]),
    ]:
        loader = create_loader(
            (paths, targets), backend=backend, train=False, batch_size=8, image_size=16
        )
        got = [label for _, batch in loader for label in batch.tolist()]
        assert got == labels


def test_demo_reads_an_existing_folder_and_writes_nothing_into_it(
    small_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.relative_to(small_folder) for p in small_folder.rglob("*"))
    args = ["demo", "--root", str(small_folder), "--epochs", "1", "--backend", "torchvision"]
    assert main(args) == 0
    assert f"using the images already in {small_folder}" in capsys.readouterr().out
    assert sorted(p.relative_to(small_folder) for p in small_folder.rglob("*")) == before


def _png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit RGB PNG (which PIL cannot write), written chunk by chunk."""
    import zlib

    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _bmp_rgb565(path: Path, width: int = 8, height: int = 4) -> None:
    """A 16-bit (5-6-5) BMP, which PIL reads but does not write."""
    pixels = (np.arange(width, dtype="<u2") * 0x0841).tobytes() * height
    masks = struct.pack("<III", 0xF800, 0x07E0, 0x001F)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 16, 3, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info) + len(masks)
    header = b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset)
    path.write_bytes(header + info + masks + pixels)


def test_files_deeper_than_8_bits_are_named_with_what_is_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Delivered with 8 bits of their 16 (or of a float): said by the check and at creation,
    # not silently (a 16-bit RGB PNG even opens in PIL as plain "RGB").
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    Image.fromarray(ramp).save(root / "c" / "gray16.png")
    _png_rgb16(root / "c" / "rgb16.png", np.stack([ramp] * 3, axis=-1))
    Image.fromarray(ramp.astype(np.float32) / 65535).save(root / "c" / "float.tif")
    Image.fromarray((ramp >> 8).astype(np.uint8)).save(root / "c" / "gray8.png")
    _bmp_rgb565(root / "c" / "rgb565.bmp")  # 16 bits a pixel, 5-6 a sample
    rgb16 = (np.arange(4 * 2 * 3) * 2000).astype(">u2").tobytes()
    (root / "c" / "rgb16.ppm").write_bytes(b"P6\n4 2\n65535\n" + rgb16)  # PIL: "RGB"
    assert Image.open(root / "c" / "rgb16.png").mode == "RGB"
    report = check_dataset(root)
    assert {Path(p).name: holds for p, holds in report.deep.items()} == {
        "gray16.png": "PNG, 16 bits a sample",
        "rgb16.png": "PNG, 16 bits a sample",
        "float.tif": "TIFF, 32-bit floats",
        "rgb16.ppm": "PPM, 16 bits a sample",
    }
    assert "8 BITS KEPT" in report.summary()
    with caplog.at_level(logging.WARNING, logger="dali_loader"):
        loader = create_loader(root, backend="torchvision", batch_size=4, num_threads=0)
    assert "4 file(s) hold more than 8 bits a sample" in caplog.text
    assert "rgb16.png" in caplog.text and "gray8.png" not in caplog.text
    images, _ = next(iter(loader))
    assert images.shape[0] == 4


@pytest.mark.parametrize(
    ("mode", "patch", "reason"),
    [
        ("RGB", {64: b"\0\0\0\7"}, "rendering intent 7"),
        ("L", {}, "the color space 'RGB', on a grayscale PNG"),  # an sRGB profile
        ("RGB", {16: b"GRAY"}, "the color space 'GRAY', on a color PNG"),
        ("RGB", {16: b"CMYK"}, "the color space 'CMYK', on a color PNG"),
        ("RGB", {12: b"abst"}, "the device class 'abst'"),
        ("RGB", {12: b"xxxx"}, "the device class 'xxxx'"),
        ("RGB", {36: b"xxxx"}, "no 'acsp' signature"),
        ("RGB", {68: b"\0\0\0\0"}, "an illuminant other than D50"),
        ("RGB", {128: b"\0\1\0\0"}, "65536 tags, more than it holds"),
        ("RGB", {}, None),  # a good profile: read as it is
    ],
)
def test_a_png_whose_icc_profile_libpng_rejects_is_read_quietly(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    mode: str,
    patch: dict[int, bytes],
    reason: str | None,
) -> None:
    # libpng, DALI's PNG decoder, printed "iCCP: ..." on stderr for such a file at every read,
    # every epoch. DALI reads a copy without the profile instead; the pixels are the file's.
    from PIL import ImageCms

    profile = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    for offset, value in patch.items():
        profile[offset : offset + len(value)] = value
    pixels = (np.arange(32 * 32 * 3).reshape(32, 32, 3) % 251).astype(np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    root = one_image_folder(tmp_path / "data", image, "p.png", icc_profile=bytes(profile))
    report = check_dataset(root)
    path = str(root / "c" / "p.png")
    assert reason in report.converted[path] if reason else path not in report.converted
    capfd.readouterr()
    dali = raw_pixels(root, "dali-cpu")
    assert "iCCP" not in capfd.readouterr().err
    assert (dali - raw_pixels(root, "torchvision")).abs().max() < 1.01  # the eval resize's


def test_check_json_report_lists_the_converted_deep_image(tmp_path: Path) -> None:
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)
    root = one_image_folder(tmp_path / "data", Image.fromarray(ramp), "deep.png")
    assert main(["check", str(root), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert [Path(c["path"]).name for c in report["converted"]] == ["deep.png"]
    assert [Path(c["path"]).name for c in report["deep"]] == ["deep.png"]


def test_a_root_through_a_symlink_and_dotdot_is_read_where_the_kernel_says(
    tmp_path: Path,
) -> None:
    """root = proj/../data with proj a link: the files are under the link's target's parent,
    not at the textual data/ (where a decoy lies): every backend reads the same files."""
    write_index_folder(tmp_path / "store" / "data", [3])
    (tmp_path / "store" / "proj").mkdir()
    (tmp_path / "proj").symlink_to(tmp_path / "store" / "proj")
    decoy = write_index_folder(tmp_path / "data", [3], size=(40, 40))
    for image in decoy.rglob("*.jpg"):
        Image.new("RGB", (40, 40), (250, 0, 250)).save(image)
    root = tmp_path / "proj" / ".." / "data"
    for backend in CPU_BACKENDS:
        loader = create_loader(root, backend=backend, train=False, batch_size=3, image_size=16)
        images, _ = next(iter(loader))
        assert decode_indices(images, IMAGENET_MEAN, IMAGENET_STD) == [0, 1, 2], backend


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
def test_a_relative_root_survives_a_change_of_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, packed: bool
) -> None:
    root = write_index_folder(tmp_path / "data", [3, 2])
    if packed:
        root = pack(root, tmp_path / "packed", shard_size=8 << 10, progress=False).parent
    monkeypatch.chdir(tmp_path)
    loader = create_loader(root.name, backend=backend, train=False, batch_size=2, image_size=16)
    monkeypatch.chdir("/")
    assert sum(len(labels) for _, labels in loader) == 5


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_file_name_that_is_not_utf8_can_be_converted(tmp_path: Path, backend: str) -> None:
    folder = tmp_path / "data" / "c"
    folder.mkdir(parents=True)
    palette = Image.new("RGB", (24, 24), (200, 30, 30)).convert("P")
    palette.save(os.fsdecode(bytes(folder) + b"/caf\xe9.png"))  # Latin-1 bytes in the name
    assert raw_pixels(tmp_path / "data", backend, size=16).shape == (3, 16, 16)


def test_an_epoch_read_to_its_last_batch_is_finished_without_asking_for_the_end(
    small_folder: Path,
) -> None:
    loader = create_loader(small_folder, backend="torchvision", batch_size=4, num_threads=0)
    for _ in zip(range(len(loader)), loader, strict=False):
        pass
    stats = loader.stats()
    assert stats is not None and stats.finished and "left early" not in str(stats)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize(
    ("suffix", "mode"), [("jpg", "RGB"), ("tif", "RGB"), ("png", "RGB"), ("tif", "L")]
)
def test_exif_rotated_files_come_out_upright_in_every_format(
    tmp_path: Path, backend: str, suffix: str, mode: str
) -> None:
    """Orientation 6 (turn 90 degrees clockwise to view): a left-white, right-black 60x40
    image is viewed 40 wide, 60 tall, white on top. PIL turns TIFFs itself when it opens them,
    but a grayscale one opened by path came out sheared at its unturned size."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = 255
    image = Image.fromarray(pixels).convert(mode)
    exif = image.getexif()
    exif[0x0112] = 6
    root = one_image_folder(tmp_path / "data", image, f"turned.{suffix}", exif=exif.tobytes())
    for train in (False, True):
        loader = create_loader(
            root,
            backend=backend,
            train=train,
            batch_size=1,
            image_size=(60, 40),
            scale=(1.0, 1.0),
            ratio=(40 / 60, 40 / 60),
            flip_prob=0.0,
            num_threads=1,
            **RAW,
        )
        out = next(iter(loader))[0][0] * 255
        assert out[:, :25].mean() > 200 and out[:, 35:].mean() < 50, (train, out.mean())


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("side", [32, 96])  # smaller and larger than checked
def test_an_image_resized_since_the_check_is_refused_not_cropped_wrong(
    tmp_path: Path, backend: str, train: bool, side: int
) -> None:
    """The crop windows are drawn for the sizes the check recorded: a file rewritten at another
    size must be named, not cut from the wrong place (DALI's region decode of a window inside
    the larger image, or its resize of a box, would not fail by itself)."""
    root = write_index_folder(tmp_path / "data", [4], size=(48, 48))
    loader = create_loader(
        root, backend=backend, train=train, batch_size=2, image_size=16, num_threads=1
    )
    victim = sorted(root.rglob("*.jpg"))[1]
    Image.new("RGB", (side, side), (10, 20, 30)).save(victim, quality=95)
    os.utime(victim, ns=(time.time_ns(), time.time_ns()))
    with pytest.raises(DatasetError, match=victim.name):
        for _ in loader:
            pass


def _explode(self: object, request: object) -> int:
    raise ValueError("a worker's own failure")


def test_a_loader_dropped_after_a_worker_error_takes_its_workers_with_it(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the garbage collector: the error's frames must not keep the loader alive."""
    import gc

    from fallback import dataset

    monkeypatch.setattr(dataset.BatchDataset, "__getitem__", _explode)  # forked workers see it
    loader = create_loader(small_folder, backend="torchvision", batch_size=4, num_threads=2)
    gc.disable()
    try:
        with pytest.raises(ValueError, match="a worker's own failure"):
            for _ in loader:
                pass
        pids = [worker.pid for worker in loader._loader._iterator._workers]
        assert len(pids) == 2
        del loader
        deadline = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{pid}") for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    finally:
        gc.enable()


def _exif_app1(orientation: int) -> bytes:
    exif = b"Exif\0\0II*\0" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, orientation, 0, 0)
    return b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif


def _pgm(maxval: int) -> bytes:
    levels = (np.arange(32 * 32).reshape(32, 32) * maxval // (32 * 32 - 1)).astype(np.uint8)
    return b"P5 32 32 %d\n" % maxval + levels.tobytes()


@pytest.mark.parametrize("kind", ["two_exif_blocks", "pgm_maxval_100", "pgm_maxval_250"])
def test_files_dali_reads_otherwise_than_pil_are_converted(tmp_path: Path, kind: str) -> None:
    """Two EXIF blocks (PIL takes the first orientation, DALI the last) or a PGM whose maxval
    is not 255 (PIL scales it, DALI does not): found by the check, read through the copy."""
    (tmp_path / "data" / "c").mkdir(parents=True)
    if kind == "two_exif_blocks":
        pixels = np.zeros((40, 40, 3), np.uint8)
        pixels[:20] = 255  # white on top: turned 180 degrees, white at the bottom
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=95)
        data = buffer.getvalue()
        (tmp_path / "data" / "c" / "x.jpg").write_bytes(
            data[:2] + _exif_app1(3) + _exif_app1(1) + data[2:]
        )
    else:  # 250: DALI's levels only ~2.5 from PIL's, too close for the decode probe to see
        (tmp_path / "data" / "c" / "x.pgm").write_bytes(_pgm(int(kind.rsplit("_", 1)[1])))
    report = check_dataset(tmp_path / "data", probe_dali=True, progress=False)
    assert len(report.converted) == 1, report.summary()
    torchvision = raw_pixels(tmp_path / "data", "torchvision")
    dali = raw_pixels(tmp_path / "data", "dali-cpu")
    assert (torchvision - dali).abs().mean() < 1


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_a_one_pixel_image_with_an_extreme_ratio_is_delivered(tmp_path: Path, backend: str) -> None:
    root = one_image_folder(tmp_path / "data", Image.new("RGB", (1, 1), (9, 99, 199)), "p.png")
    loader = create_loader(root, backend=backend, batch_size=1, image_size=8, ratio=(3.0, 4.0))
    images, _ = next(iter(loader))
    assert images.shape == (1, 3, 8, 8)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_the_newest_iter_delivers_even_if_an_older_one_asks_first(
    small_folder: Path, backend: str
) -> None:
    loader = create_loader(small_folder, backend=backend, batch_size=4, image_size=16)
    older, newer = iter(loader), iter(loader)
    with pytest.raises(ConfigError, match="superseded before its first batch"):
        next(older)
    assert sum(len(labels) for _, labels in newer) == 21


def test_max_pixels_of_another_type_is_refused(small_folder: Path) -> None:
    with pytest.raises(ConfigError, match="max_pixels must be an integer"):
        create_loader(small_folder, backend="torchvision", max_pixels="89478485")  # type: ignore[arg-type]


def test_running_out_of_memory_on_a_file_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dali_loader import check

    root = write_index_folder(tmp_path / "data", [2])

    def no_memory(image: Image.Image) -> Image.Image:
        raise MemoryError

    with monkeypatch.context() as patch:
        patch.setattr(check, "upright_rgb8", no_memory)
        assert len(check_dataset(root, probe_dali=False, progress=False).bad) == 2
    assert not check_dataset(root, probe_dali=False, progress=False).bad  # checked again


def test_a_converted_file_changed_or_its_copy_gone_is_named(tmp_path: Path) -> None:
    """DALI reads CMYK files through a copy made at the check: it must not serve a stale one."""
    root = write_index_folder(tmp_path / "data", [3])
    cmyk = root / "class_00" / "cmyk.jpg"
    cmyk.write_bytes(_cmyk_jpeg())
    loader = create_loader(root, backend="dali-cpu", batch_size=2, image_size=16)
    copy = Path(next(b for a, b in loader._copies if a == str(cmyk)))
    copy.unlink()
    with pytest.raises(DatasetError, match="converted copy is gone"):
        for _ in loader:
            pass
    loader = create_loader(root, backend="dali-cpu", batch_size=2, image_size=16)
    Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(cmyk)
    with pytest.raises(DatasetError, match=f"{cmyk.name}: changed since the check"):
        for _ in loader:
            pass


def test_a_converted_file_changed_again_and_again_keeps_one_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy is made for the file as it is (its stamp): each touch, chmod or copy without -p
    # made one more, and none went, so the cache grew without end.
    from dali_loader import cache

    monkeypatch.setenv("DALI_LOADER_CACHE", str(tmp_path / "cache"))
    cache._usable.cache_clear()
    root = write_index_folder(tmp_path / "data", [3])
    cmyk = root / "class_00" / "cmyk.jpg"
    cmyk.write_bytes(_cmyk_jpeg())
    for step in range(3):
        os.utime(cmyk, ns=(time.time_ns(), time.time_ns() + step))
        report = check_dataset(root, progress=False)
        assert list((tmp_path / "cache" / "converted").iterdir()) == [
            Path(report.copies[str(cmyk)])
        ]
    cache._usable.cache_clear()


def test_a_label_far_beyond_the_samples_is_refused_not_made_into_classes(
    small_folder: Path,
) -> None:
    files = sorted(str(p) for p in small_folder.rglob("*.jpg"))
    labels = [0] * (len(files) - 1) + [10**7]
    with pytest.raises(DatasetError, match=r"labels go up to 10,000,000 for 21 samples"):
        create_loader((files, labels), backend="torchvision", num_threads=0)
