"""Dirty folders: every odd file has a defined behaviour, and nothing good is lost or repeated."""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dali_loader import DatasetError, check_dataset, create_loader
from dali_loader.cli import main

from .conftest import IMAGENET_MEAN, IMAGENET_STD, _color, decode_indices, index_image

BAD = {
    "empty.jpg": "empty file (0 bytes)",
    "truncated.jpg": "cannot be decoded",
    "page.jpg": "not an image",
    "bomb.png": "above max_pixels",
    "dangling.jpg": "broken symlink",
}
CONVERTED = {"cmyk.jpg", "deep.png", "junk_marker.jpg", "broken_app.jpg", "rgba.png", "palette.png"}


def _jpeg(image: Image.Image, **kwargs) -> bytes:  # type: ignore[no-untyped-def]
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **({} if "qtables" in kwargs else {"quality": 95}), **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A folder with every kind of odd file; returns it and good file name -> encoded index."""
    root = tmp_path_factory.mktemp("dirty")
    a, b = root / "a", root / "b"
    (a / "nested" / "deeper").mkdir(parents=True)
    b.mkdir()
    good: dict[str, int] = {}

    def put(folder: Path, name: str, data: bytes, index: int | None) -> None:
        (folder / name).write_bytes(data)
        if index is not None:
            good[name] = index

    for i in range(6):
        put(a, f"plain_{i}.jpg", _jpeg(index_image(i)), i)
    put(a, "UPPER.JPG", _jpeg(index_image(10)), 10)
    put(a, "progressive.jpg", _jpeg(index_image(11), progressive=True), 11)
    put(a, "cmyk.jpg", _jpeg(index_image(12).convert("CMYK")), 12)
    png = io.BytesIO()
    index_image(13).save(png, "PNG")
    put(a, "png_named.jpg", png.getvalue(), 13)
    junk = _jpeg(index_image(14))
    put(a, "junk_marker.jpg", junk[:2] + b"\xff\x00\x00" + junk[2:], 14)  # PIL reads, DALI does not
    app = _jpeg(index_image(26))  # an APP1 segment whose length field is 6 bytes short
    put(a, "broken_app.jpg", app[:2] + b"\xff\xe1\x00\x08Exif\x00\x00ABCDEFGH" + app[2:], 26)
    turned = np.empty((32, 64, 3), dtype=np.uint8)
    turned[:, :32], turned[:, 32:] = _color(15), _color(0)
    exif = Image.Exif()
    exif[0x0112] = 6
    put(a, "exif_rotated.jpg", _jpeg(Image.fromarray(turned), exif=exif), 15)
    put(a, "nested/deeper/nested.jpg", _jpeg(index_image(16)), 16)
    put(a, "ñandú 東京.jpg", _jpeg(index_image(17)), 17)
    put(a, ".hidden.jpg", _jpeg(index_image(18)), 18)  # a sample, as in ImageFolder
    qtable = [16] + [300] * 63  # entries above 255: 16-bit quantization tables
    put(a, "qtable16.jpg", _jpeg(index_image(19), qtables=[qtable, qtable]), 19)
    for k, (ext, fmt) in enumerate(
        [("bmp", "BMP"), ("tif", "TIFF"), ("webp", "WEBP"), ("ppm", "PPM")]
    ):
        buffer = io.BytesIO()
        index_image(20 + k).save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        put(b, f"format.{ext}", buffer.getvalue(), 20 + k)
    rgba = io.BytesIO()
    index_image(24).convert("RGBA").save(rgba, "PNG")
    put(b, "rgba.png", rgba.getvalue(), 24)
    palette = io.BytesIO()
    index_image(25).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(palette, "PNG")
    put(b, "palette.png", palette.getvalue(), 25)
    deep = io.BytesIO()
    Image.fromarray(np.full((48, 48), 30000, dtype=np.uint16)).save(deep, "PNG")
    put(b, "deep.png", deep.getvalue(), None)
    good["deep.png"] = -1  # 16-bit gray: delivered, but carries no index
    put(b, "gray.pgm", _pgm(), None)
    good["gray.pgm"] = -1
    os.symlink(a / "plain_0.jpg", b / "link.jpg")
    good["link.jpg"] = 0  # a symlink is followed, as ImageFolder does: plain_0 under class b
    # Bad files.
    (b / "empty.jpg").write_bytes(b"")
    (b / "truncated.jpg").write_bytes(_jpeg(index_image(30))[:300])
    (b / "page.jpg").write_bytes(b"<!DOCTYPE html><html><body>404</body></html>")
    Image.new("1", (15000, 15000)).save(b / "bomb.png")  # 225 Mpx, a few KB on disk
    os.symlink(b / "gone.jpg", b / "dangling.jpg")
    # Not samples at all (ImageFolder ignores them): hidden metadata, other extensions.
    (a / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (a / "notes.txt").write_text("not an image")
    return root, good


def _pgm() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (40, 40), 90).save(buffer, "PPM")
    return buffer.getvalue()


def test_check_reports_every_bad_file_with_its_reason(dirty: tuple[Path, dict[str, int]]) -> None:
    root, _ = dirty
    report = check_dataset(root, progress=False)
    bad = {Path(p).name: reason for p, reason in report.bad.items()}
    assert set(bad) == set(BAD)
    for name, words in BAD.items():
        assert words in bad[name], (name, bad[name])
    converted = {Path(p).name for p in report.converted}
    assert converted == CONVERTED
    junk = str(root / "a" / "junk_marker.jpg")
    assert "DALI's JPEG parser rejects it: marker 0xFF00" in report.converted[junk]
    assert all(Path(copy).exists() for copy in report.copies.values())


def test_decode_probe_bisects_to_the_file_dali_rejects(dirty: tuple[Path, dict[str, int]]) -> None:
    from dali_loader.pipeline import decode_failures

    root, _ = dirty
    junk = str(root / "a" / "junk_marker.jpg")
    plain = [str(root / "a" / f"plain_{i}.jpg") for i in range(6)]
    failed = decode_failures([*plain[:3], junk, *plain[3:]], None, progress=False)
    assert list(failed) == [junk]


def test_check_command_prints_writes_json_and_fails(
    dirty: tuple[Path, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = dirty
    out = tmp_path / "report.json"
    assert main(["check", str(root), "--json", str(out)]) == 1
    text = capsys.readouterr().out
    assert "5 bad" in text and "BAD" in text and "truncated.jpg" in text
    report = json.loads(out.read_text())
    assert {Path(entry["path"]).name for entry in report["bad"]} == set(BAD)
    clean = tmp_path / "clean"
    (clean / "c").mkdir(parents=True)
    index_image(1).save(clean / "c" / "ok.jpg")
    assert main(["check", str(clean)]) == 0


def test_check_is_cached_by_path_size_and_mtime(
    dirty: tuple[Path, dict[str, int]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    for i in range(3):
        index_image(i).save(root / "c" / f"{i}.jpg")
    check_dataset(root, progress=False)
    import dali_loader.check as check

    inspected: list[str] = []
    original = check._inspect
    monkeypatch.setattr(check, "_inspect", lambda p, s, m: inspected.append(p) or original(p, s, m))
    check_dataset(root, progress=False)
    assert inspected == []  # paid once
    (root / "c" / "1.jpg").write_bytes(b"")  # changed: size and mtime differ
    index_image(3).save(root / "c" / "3.jpg")  # new
    report = check_dataset(root, progress=False)
    assert sorted(inspected) == [str(root / "c" / "1.jpg"), str(root / "c" / "3.jpg")]
    assert list(report.bad) == [str(root / "c" / "1.jpg")]


def test_unreadable_file_is_bad_with_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root, which reads any file: simulate what chmod 000 does to other users.
    root = tmp_path / "data"
    (root / "c").mkdir(parents=True)
    for name in ("ok.jpg", "locked.jpg"):
        index_image(1).save(root / "c" / name)
    import dali_loader.check as check

    real_open = check.open_image

    def guarded(path: str):  # type: ignore[no-untyped-def]
        if str(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path)

    monkeypatch.setattr(check, "open_image", guarded)
    report = check_dataset(root, progress=False, probe_dali=False, use_cache=False)
    assert report.bad == {
        str(root / "c" / "locked.jpg"): "permission denied: make the file readable"
    }


def test_a_file_made_unreadable_mid_epoch_is_named(tmp_path: Path, backend: str) -> None:
    # chmod 000 during an epoch, on a file the epoch has not read yet: the DatasetError naming
    # the file, not a raw PermissionError. Root reads any file; as root, the epoch runs without
    # the capabilities that let it (setpriv), so the file is as unreadable as to anyone else.
    import shutil
    import subprocess
    import sys

    from .conftest import write_index_folder

    root = write_index_folder(tmp_path / "data", [12, 12])
    victim = sorted(root.rglob("*.jpg"))[-1]  # the last batch of an unshuffled epoch
    code = f"""
import os
from dali_loader import DatasetError, create_loader
kw = dict(backend={backend!r}, train=False, batch_size=2, image_size=16, num_threads=1)
batches = iter(create_loader({str(root)!r}, **kw))
next(batches)
os.chmod({str(victim)!r}, 0)
try:
    open({str(victim)!r}, "rb")
except PermissionError:
    pass
else:
    raise SystemExit("this process still reads a file chmod 000: the test proves nothing here")
try:
    for _ in batches:
        pass
except DatasetError as error:
    message = str(error)
    assert "changed after the loader checked them" in message, message
    assert {str(victim)!r} in message, message
else:
    raise SystemExit("nothing noticed the unreadable file")
"""
    command = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) runs the epoch as root without reading every file"
        drop = ["--inh-caps=-all", "--ambient-caps=-all"]
        drop.append("--bounding-set=-dac_override,-dac_read_search")
        command = [setpriv, *drop, *command]
    environment = {**os.environ, "DALI_LOADER_CACHE": str(tmp_path / "cache")}
    subprocess.run(command, check=True, timeout=180, env=environment)


def test_raise_policy_names_the_files_and_the_command(dirty: tuple[Path, dict[str, int]]) -> None:
    root, _ = dirty
    with pytest.raises(DatasetError) as raised:
        create_loader(root, backend="torchvision", num_threads=0)
    message = str(raised.value)
    assert "5 file(s)" in message and "empty.jpg: empty file (0 bytes)" in message
    assert f"dali-loader check {root}" in message and "on_bad_file='skip'" in message


def test_skip_policy_delivers_every_good_file_exactly_once(
    dirty: tuple[Path, dict[str, int]], backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    root, good = dirty
    with caplog.at_level("WARNING", logger="dali_loader"):
        loader = create_loader(
            root,
            backend=backend,
            on_bad_file="skip",
            train=False,
            shuffle=True,
            batch_size=5,
            image_size=16,
            num_threads=2,
        )
    assert "skipping 5 bad file(s)" in caplog.text
    assert {Path(p).name for p in loader.bad_files} == set(BAD)
    assert len(loader.dataset) == len(good)
    for _ in range(2):
        seen = []
        for images, labels in loader:
            assert images.shape[1:] == (3, 16, 16)
            indices = decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
            seen += list(zip(indices, labels.tolist(), strict=True))
        assert len(seen) == len(good)
        encoded = Counter(index for index, _ in seen)
        for name, index in good.items():
            if index >= 0:
                assert encoded[index] >= 1, f"{name} (index {index}) was not delivered intact"
        expected = Counter(i for i in good.values() if i >= 0)
        assert {i: encoded[i] for i in expected} == dict(expected)  # 0 twice: file and its link


def test_train_mode_reads_every_odd_file(dirty: tuple[Path, dict[str, int]], backend: str) -> None:
    root, good = dirty
    loader = create_loader(
        root,
        backend=backend,
        on_bad_file="skip",
        batch_size=5,
        image_size=48,
        scale=(0.5, 1.0),
        num_threads=2,
        rotate_degrees=10,
    )
    assert sum(len(labels) for _, labels in loader) == len(good)


def test_backends_agree_on_odd_formats(dirty: tuple[Path, dict[str, int]]) -> None:
    root, _ = dirty
    batches = {}
    for backend in ("torchvision", "dali-cpu"):
        loader = create_loader(
            root,
            backend=backend,
            on_bad_file="skip",
            train=False,
            batch_size=64,
            image_size=16,
            num_threads=1,
        )
        batches[backend] = next(iter(loader))[0]
    diff = (batches["torchvision"] - batches["dali-cpu"]).abs().flatten(1).max(dim=1).values
    assert diff.max() < 0.05, diff  # CMYK, 16-bit, palette, alpha, EXIF: one interpretation


def test_max_pixels_is_configurable(dirty: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    root = tmp_path / "big"
    (root / "c").mkdir(parents=True)
    Image.new("RGB", (300, 200)).save(root / "c" / "large.png")
    assert "above max_pixels=50,000" in next(
        iter(check_dataset(root, max_pixels=50_000, progress=False).bad.values())
    )
    assert not check_dataset(root, max_pixels=60_000, progress=False).bad
