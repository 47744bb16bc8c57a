"""The dataset check: every file tried the way each backend will read it, before training starts.

DALI cannot skip a sample: one undecodable file kills the pipeline mid-epoch. So each file is
classified once, ahead of time, and the verdict is cached (keyed by path, size and mtime):

- bad: cannot be delivered by any backend (empty, truncated, not an image, unreadable, above
  `max_pixels`). The loader raises, or skips it, by its `on_bad_file` policy.
- converted: PIL reads it, but DALI would not read it the same way or at all (CMYK, 16-bit,
  palette or alpha images, junk that DALI's parser rejects). The DALI backends read a lossless
  PNG copy of PIL's RGB decode instead, with the same label: nothing a viewer shows is dropped.
- ok: every backend reads the file itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import numbers
import os
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from .cache import cache_dir, file_stamp, write_atomic
from .errors import ConfigError, DatasetError
from .imaging import open_image, upright_rgb8
from .index import SampleIndex, Source, build_index
from .spec import DEFAULT_MAX_PIXELS

logger = logging.getLogger("dali_loader")

# What DALI decodes exactly as PIL does: these formats, in these modes.
_DALI_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM"}
_DALI_MODES = {"RGB", "L"}
# 2: a verdict per DALI decoder (dali_cpu, dali_gpu); 3: stamps with ctime; 4: upright sizes;
# 5: files opened from a file object, a PGM/PPM maxval other than 255 converted, copies named
# by the file's content; 6: "deep", what a file holds beyond 8 bits a sample, PNGs whose
# ICC profile libpng warns about converted
_CACHE_VERSION = 6


@dataclass
class CheckReport:
    """What the check found: bad files (path -> reason) and files DALI reads as a converted copy."""

    source: str
    num_files: int
    bad: dict[str, str] = field(default_factory=dict)
    converted: dict[str, str] = field(default_factory=dict)  # path -> why
    copies: dict[str, str] = field(default_factory=dict)  # path -> the PNG copy DALI reads
    # path -> what it holds beyond the 8 bits a sample delivered ("PNG, 16 bits a sample")
    deep: dict[str, str] = field(default_factory=dict)
    # path -> (width, height) as delivered (EXIF orientation applied), for every good file:
    # the augmentation's parameters are drawn from it before any backend decodes the file.
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    verified_shards: int = 0  # a packed set: its shards' checksums verified instead

    def summary(self, limit: int = 20) -> str:
        if self.verified_shards:
            return (
                f"{self.source}: {self.num_files} samples in {self.verified_shards} shards, "
                "checksums verified"
            )
        return self._files_summary(limit)

    def _files_summary(self, limit: int) -> str:
        lines = [
            f"checked {self.num_files} files under {self.source}: {len(self.bad)} bad, "
            f"{len(self.converted)} read by DALI through a converted copy"
        ]
        for path, reason in list(self.bad.items())[:limit]:
            lines.append(f"  BAD  {path}: {reason}")
        if len(self.bad) > limit:
            lines.append(f"  ... and {len(self.bad) - limit} more bad files")
        for path, reason in list(self.converted.items())[:limit]:
            lines.append(f"  CONVERTED  {path}: {reason}")
        if len(self.converted) > limit:
            lines.append(f"  ... and {len(self.converted) - limit} more converted files")
        if self.deep:
            lines.append(deep_files_message(self.deep, limit))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_files": self.num_files,
            "bad": [{"path": p, "reason": r} for p, r in self.bad.items()],
            "converted": [
                {"path": p, "reason": r, "copy": self.copies.get(p)}
                for p, r in self.converted.items()
            ],
            "deep": [{"path": p, "holds": h} for p, h in self.deep.items()],
        }


def deep_files_message(deep: dict[str, str], limit: int = 5) -> str:
    """The files delivered with fewer bits than they hold, and why."""
    lines = [
        f"{len(deep)} file(s) hold more than 8 bits a sample; every backend delivers 8 (uint8),"
        " their range scaled to 0..255 as README's table of files says. Convert them first if"
        " the low bits matter:"
    ]
    lines += [f"  8 BITS KEPT  {path}: {holds}" for path, holds in list(deep.items())[:limit]]
    if len(deep) > limit:
        lines.append(f"  ... and {len(deep) - limit} more")
    return "\n".join(lines)


def check_dataset(
    source: Source | SampleIndex,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    probe_dali: bool | None = None,
    device_id: int | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> CheckReport:
    """Check every file of `source` for every backend; cached, so it is paid once.

    Args:
        source: an image folder, `(paths, labels)`, or an already built index.
        max_pixels: larger images are bad (decompression bombs); PIL's default limit.
        probe_dali: also decode with DALI (default: when DALI is installed).
        device_id: probe DALI's GPU decoder on this device instead of its CPU decoder.
        use_cache: reuse verdicts of files whose size and mtime have not changed.
        progress: show progress bars.
    """
    if not isinstance(max_pixels, numbers.Integral) or isinstance(max_pixels, bool):
        raise ConfigError(f"max_pixels must be an integer, got {max_pixels!r}")
    index = source if isinstance(source, SampleIndex) else build_index(source)
    if probe_dali is None:
        from .backends import dali_installed

        probe_dali = dali_installed()
    cache_file = cache_dir() / f"check-{_dataset_key(index, max_pixels)}.json"
    cached = _load_cache(cache_file) if use_cache else {}
    verdicts: dict[str, dict[str, Any]] = {}
    todo = []
    for path in dict.fromkeys(index.paths):
        stamp = file_stamp(path)
        entry = cached.get(path)
        if entry is not None and entry["stamp"] == stamp:
            verdicts[path] = entry
        else:
            todo.append((path, stamp))
    pil_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # max_pixels is checked instead, from the header
    try:
        _inspect_all(todo, verdicts, max_pixels, progress)
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if probe_dali:
        # The GPU decoder and the CPU one do not reject the same files: each has its verdict.
        decoder = "dali_cpu" if device_id is None else "dali_gpu"
        unprobed = [
            p for p, v in verdicts.items() if v["status"] == "ok" and v.get(decoder) is None
        ]
        from .pipeline import decode_failures

        failed = decode_failures(unprobed, device_id, progress)
        for path in unprobed:
            verdicts[path][decoder] = path not in failed
            if path in failed:
                verdicts[path]["status"] = "convert"
                verdicts[path]["reason"] = f"DALI cannot read it as PIL does ({failed[path]})"
    report = CheckReport(
        source=index.root or f"({len(index)} listed paths)", num_files=len(verdicts)
    )
    for path, verdict in verdicts.items():
        if verdict["status"] == "bad":
            report.bad[path] = verdict["reason"]
            continue
        width, height = verdict["size"]
        report.sizes[path] = (width, height)
        if "deep" in verdict:
            report.deep[path] = verdict["deep"]
        if verdict["status"] == "convert":
            report.converted[path] = verdict["reason"]
            report.copies[path] = _converted_copy(path, verdict)
    if use_cache:
        try:
            _save_cache(cache_file, verdicts)
        except OSError as error:  # a full disk, say: the verdicts are only not kept
            logger.warning(
                "dali_loader: cannot save the check's verdicts to %s: %s", cache_file, error
            )
    return report


def check_policy(on_bad_file: str) -> None:
    """Refuse an unknown policy before any expensive work."""
    if on_bad_file not in ("raise", "skip"):
        raise ConfigError(f"on_bad_file must be 'raise' or 'skip', got {on_bad_file!r}")


def apply_policy(index: SampleIndex, report: CheckReport, on_bad_file: str) -> SampleIndex:
    """The index the loader reads: bad files raised ("raise") or left out ("skip"), and each
    sample's size as the check found it."""
    check_policy(on_bad_file)
    if report.bad:
        listed = "\n".join(f"  {path}: {why}" for path, why in list(report.bad.items())[:5])
        more = f"\n  ... and {len(report.bad) - 5} more" if len(report.bad) > 5 else ""
        if on_bad_file == "raise":
            raise DatasetError(
                f"{len(report.bad)} file(s) under {report.source} cannot be decoded:\n"
                f"{listed}{more}\nRun `dali-loader check {report.source}` for the full list, "
                "then fix or remove them, or pass on_bad_file='skip' (`dali-loader pack` and "
                "`preview`: --on-bad-file skip) to leave them out."
            )
        logger.warning(
            "skipping %d bad file(s) under %s (on_bad_file='skip'):\n%s%s",
            len(report.bad),
            report.source,
            listed,
            more,
        )
        keep = [i for i, path in enumerate(index.paths) if path not in report.bad]
        if not keep:
            raise DatasetError(f"every file under {report.source} is bad; nothing to load")
        index = index.subset(keep)
    sizes = np.array([report.sizes[path] for path in index.paths], dtype=np.int32)
    return dataclasses.replace(index, sizes=sizes.reshape(len(index), 2))


def _inspect_all(
    todo: list[tuple[str, list[int] | None]],
    verdicts: dict[str, dict[str, Any]],
    max_pixels: int,
    progress: bool,
) -> None:
    with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)))) as pool:
        jobs = pool.map(lambda job: _inspect(job[0], job[1], max_pixels), todo)
        bar = tqdm(
            jobs,
            total=len(todo),
            desc="checking files",
            unit="file",
            disable=not (progress and todo),
        )
        for (path, _), verdict in zip(todo, bar, strict=True):
            verdicts[path] = verdict


def _inspect(path: str, stamp: list[int] | None, max_pixels: int) -> dict[str, Any]:
    """How PIL (and so the torchvision backend) reads `path`, and whether DALI may read it as is."""
    verdict: dict[str, Any] = {"stamp": stamp, "status": "bad", "reason": ""}
    if stamp is None:
        verdict["reason"] = "cannot be opened: missing, or a broken symlink"
        return verdict
    if stamp[0] == 0:
        verdict["reason"] = "empty file (0 bytes)"
        return verdict
    try:
        with open_image(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                verdict["reason"] = (
                    f"{width}x{height} is {width * height:,} pixels, above max_pixels="
                    f"{max_pixels:,}; raise max_pixels to load it, or downscale the file"
                )
                return verdict
            image_format, mode = image.format, image.mode
            deep = _deeper_than_8_bits(image)  # from the decoder's raw mode: before load()
            profile_warning = _libpng_profile_warning(image)
            image.load()
            upright = upright_rgb8(image)  # what the backends deliver
            verdict["size"] = list(upright.size)
    except PermissionError:
        verdict["reason"] = "permission denied: make the file readable"
        return verdict
    except UnidentifiedImageError:
        verdict["reason"] = (
            "not an image PIL can read (HTML or text under an image name, or a format or pixel"
            " type PIL does not support, such as a 3-channel float TIFF)"
        )
        return verdict
    except MemoryError:  # this process's limit, not the file's fault: bad now, checked again
        verdict["reason"] = "out of memory while decoding it (checked again next time)"
        verdict["transient"] = True
        return verdict
    except Exception as error:  # any failure on one file makes that file bad, never the check
        verdict["reason"] = f"cannot be decoded: {type(error).__name__}: {error}"
        return verdict
    if image_format not in _DALI_FORMATS or mode not in _DALI_MODES:
        verdict["status"] = "convert"
        verdict["reason"] = f"{image_format} in mode {mode}: DALI would read it differently"
    elif image_format == "JPEG" and (problem := _jpeg_header_problem(path)):
        verdict["status"] = "convert"
        verdict["reason"] = f"PIL reads it, DALI's JPEG parser rejects it: {problem}"
    elif image_format == "PPM" and (maxval := _netpbm_maxval(path)) not in (None, 255):
        verdict["status"] = "convert"
        verdict["reason"] = f"maxval {maxval}: PIL scales it to 0..255, DALI does not"
        if maxval > 255 and not deep:  # PIL's mode and raw mode say "RGB" for a P6
            deep = f"{maxval.bit_length()} bits a sample"
    elif profile_warning:
        verdict["status"] = "convert"
        verdict["reason"] = (
            f"its ICC profile has {profile_warning}: libpng, DALI's PNG decoder, would warn "
            "at every read (pixels unchanged; the copy has no profile)"
        )
    else:
        verdict["status"] = "ok"
    if deep:
        verdict["deep"] = f"{image_format}, {deep}"
    return verdict


def _deeper_than_8_bits(image: Image.Image) -> str | None:
    """What `image` holds beyond the 8 bits a sample every backend delivers ("16 bits a
    sample", "32-bit floats"), None for 8 bits or fewer. PIL itself drops the low byte of a
    16-bit RGB PNG, so the decoder's raw mode says it, not the mode."""
    if image.mode == "F":
        return "32-bit floats"
    tile = getattr(image, "tile", None)  # an ImageFile's: (codec, extents, offset, args)
    raw = tile[0][3] if tile and image.format in ("PNG", "TIFF", "PPM") else None
    raw = raw[0] if isinstance(raw, tuple) and raw else raw
    # a sample's bits in these formats' raw modes ("RGB;16B", "I;12"); BMP's "BGR;16" is a
    # pixel's
    bits = re.search(r";(\d+)", raw) if isinstance(raw, str) else None
    if bits and int(bits[1]) > 8:
        return f"{bits[1]} bits a sample"
    if image.mode.startswith("I"):
        return "32-bit integers" if image.mode == "I" else "16 bits a sample"
    return None


def _libpng_profile_warning(image: Image.Image) -> str | None:
    """What libpng rejects in a PNG's ICC profile, and so says on stderr ("iCCP: invalid
    rendering intent") each time it decodes the file, every epoch: the checks of its
    `png_icc_check_header` and `png_icc_check_tag_table`. Neither PIL nor DALI applies the
    profile. (libpng also names a few known-bad sRGB profiles by checksum, and a second iCCP
    chunk; those are not looked for.)"""
    profile = image.info.get("icc_profile")
    if image.format != "PNG" or not isinstance(profile, bytes):
        return None
    if len(profile) < 132 or int.from_bytes(profile[:4], "big") != len(profile):
        return "a length that is not the profile's"
    if profile[36:40] != b"acsp":
        return "no 'acsp' signature"
    if profile[68:80] != _D50:
        return "an illuminant other than D50"
    intent = int.from_bytes(profile[64:68], "big")
    if intent > 3:  # perceptual, relative, saturation, absolute
        return f"rendering intent {intent} (0-3 are defined)"
    gray = image.mode in ("1", "L", "LA", "La") or image.mode.startswith("I")
    space = profile[16:20]
    if space != (b"GRAY" if gray else b"RGB "):
        kind = "grayscale" if gray else "color"
        return f"the color space {space.decode('latin-1').strip()!r}, on a {kind} PNG"
    if profile[12:16] not in (b"scnr", b"mntr", b"prtr", b"spac"):
        return f"the device class {profile[12:16].decode('latin-1')!r}"
    if profile[20:24] not in (b"XYZ ", b"Lab "):
        return f"the connection space {profile[20:24].decode('latin-1').strip()!r}"
    tags = int.from_bytes(profile[128:132], "big")
    if 132 + 12 * tags > len(profile):
        return f"{tags} tags, more than it holds"
    for at in range(132, 132 + 12 * tags, 12):
        start, size = (int.from_bytes(profile[i : i + 4], "big") for i in (at + 4, at + 8))
        if start % 4 or start + size > len(profile):
            return "a tag outside the profile, or not on a 4-byte boundary"
    return None


_D50 = bytes.fromhex("0000F6D6 00010000 0000D32D")  # the PCS illuminant, s15Fixed16 X, Y, Z


def _jpeg_header_problem(path: str) -> str | None:
    """Walk the JPEG segments up to the image data as a strict parser does.

    PIL skips junk between segments; DALI's parser stops with "Invalid marker", and not always
    (seen: only when such a file is not first in its batch), so a decode probe cannot be
    trusted to find these files.
    """
    with open(path, "rb") as f:
        data = f.read(1 << 20)
    at = 2  # after SOI
    while at < len(data):
        if data[at] != 0xFF:
            return f"byte 0x{data[at]:02X} at offset {at} where a marker should start"
        while at < len(data) and data[at] == 0xFF:  # fill bytes
            at += 1
        if at >= len(data):
            break
        marker = data[at]
        at += 1
        if marker == 0xDA:  # start of scan: the headers were fine
            return None
        if marker == 0x00 or marker == 0xD9:
            return f"marker 0xFF{marker:02X} at offset {at - 2} before the image data"
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if at + 2 > len(data):
            break
        at += (data[at] << 8) | data[at + 1]
    return "the headers end before the image data"


def _netpbm_maxval(path: str) -> int | None:
    """The maxval of a PGM/PPM (P2, P3, P5, P6) from its header; None for a bitmap or a
    header this cannot read (PIL read the file: its own verdict stands then)."""
    try:
        with open(path, "rb") as f:
            header = f.read(1 << 16)  # comments may be long
    except OSError:  # gone since PIL read it: the next check sees that
        return None
    if header[:2] not in (b"P2", b"P3", b"P5", b"P6"):
        return None
    fields: list[bytes] = []
    for line in header[2:].split(b"\n"):
        fields += line.split(b"#", 1)[0].split()
        if len(fields) >= 3:
            return int(fields[2]) if fields[2].isdigit() else None
    return None


def _converted_copy(path: str, verdict: dict[str, Any]) -> str:
    """A lossless PNG of the RGB every backend delivers (`imaging.rgb8`, EXIF orientation
    applied; no ICC profile), made once for the file's content: a touch, a chmod or a copy of
    the file finds it again (a name by path and stamp gave each of them a new copy, and the
    cache grew). The content's hash is kept in the verdict: a cached check reads no file."""
    data = None
    if "content" not in verdict:
        data = Path(path).read_bytes()
        verdict["content"] = hashlib.sha1(data).hexdigest()
    copy = cache_dir() / "converted" / f"{verdict['content']}.png"
    if copy.exists():
        return str(copy)
    with Image.open(io.BytesIO(data or Path(path).read_bytes())) as image:
        rgb = upright_rgb8(image)
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=copy.parent, suffix=".png", delete=False) as tmp:
            try:
                # without the file's ICC profile: no backend applies one, and libpng warns
                # about some at every read
                rgb.save(tmp, "PNG", compress_level=1, icc_profile=None)
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, copy)
    except OSError as error:
        raise DatasetError(
            f"cannot write the copy of {path} that DALI reads to {copy.parent}: {error}. Free "
            "space there, or set DALI_LOADER_CACHE to a writable folder with room"
        ) from error
    return str(copy)


def _dataset_key(index: SampleIndex, max_pixels: int) -> str:
    """One cache file per folder (so adding a file re-checks that file only), or per list."""
    digest = hashlib.sha1(f"v{_CACHE_VERSION}|{max_pixels}".encode())
    for path in [index.root] if index.root else index.paths:
        digest.update(os.path.abspath(path).encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:16]


def _load_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return {}
    if data.get("version") != _CACHE_VERSION:
        return {}
    entries: dict[str, dict[str, Any]] = data.get("files", {})
    return entries


def _save_cache(cache_file: Path, verdicts: dict[str, dict[str, Any]]) -> None:
    """The verdicts about the files themselves; a transient one (out of memory) is not kept."""
    kept = {path: v for path, v in verdicts.items() if not v.get("transient")}
    write_atomic(cache_file, json.dumps({"version": _CACHE_VERSION, "files": kept}))
