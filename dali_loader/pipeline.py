"""The DALI graphs, defined from a `LoaderSpec`: the only module that uses DALI's operators
(the loader's graph, and the dataset check's decode probe, `decode_failures`).

Samples come in through `external_source`, in the order the sampler chose, so DALI never decides
the order (its reader shuffles only inside a buffer). What comes in is either file names, which
DALI's own threads read (`fn.io.file.read`: no Python, no GIL, per file), or, for packed shards,
the encoded bytes the feed read ahead (`dali_loader.feed`). Each sample's parameters come in
beside them, drawn on the host (`dali_loader.params`), the same values the torchvision backend
applies, stage by stage (`dali_loader.plan`). On the GPU, decoding is nvJPEG
(`device="mixed"`, the hardware decoder where the GPU has one), of the crop window alone where
it is whole pixels; resize, padding, the warp (flips, turns, affines), the color ops and
normalization follow on the GPU. With `device_id=None` the same graph runs on the CPU.

Every function here only *defines* a pipeline: defining checks operator names, argument names
and device placement without a GPU, so the tests define every GPU graph on CPU-only machines
(what DALI checks only when it creates the operators needs a GPU: the GPU proof);
`build_or_explain` builds one and turns a missing GPU into a clear error.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali import math as dmath
from nvidia.dali.pipeline import Pipeline
from PIL import Image
from tqdm import tqdm

from . import params
from .errors import BackendUnavailableError
from .feed import InputKind
from .forking import freeze_in_forked_children
from .hue import Ops, turn_hue
from .imaging import open_image, upright_rgb8
from .ops import ColorJitter, GaussianBlur, Grayscale
from .plan import Plan
from .spec import LoaderSpec

# Probe pipelines at once: each holds a decoder (on a GPU, its own memory), and decoding one
# small file at a time is bound by the pipeline's own overhead, not the cores.
_PROBE_THREADS = 8

Source = Callable[[], Any]

# The mixed decoder's arguments. Its memory padding stays at DALI's defaults (16 MiB of device
# and 8 MiB of pinned host memory a thread, grown on demand to the largest image seen): DALI's
# ResNet-50 example reserves 211 MB of device and 140 MB of pinned memory a thread up front (the
# pinned part at least twice, double-buffered), at 8 threads ~1.7 GB + 2.2 GB before the first
# batch, per rank, to save a few reallocations in the first epoch; nor are its hardware-decoder
# preallocation hints kept. Unmeasured on a GPU yet: the GPU proof's bench reports the memory.
_MIXED_DECODER: dict[str, Any] = {
    "device": "mixed",
    # The CPU decoder and PIL upsample chroma this way; keeps the backends' pixels in agreement.
    "jpeg_fancy_upsampling": True,
}
_CPU_DECODER: dict[str, Any] = {"device": "cpu"}

_OUTPUT_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16, "bfloat16": types.FLOAT}


def define_pipeline(
    spec: LoaderSpec,
    source: Source,
    *,
    inputs: InputKind,
    device_id: int | None,
    num_threads: int,
    prefetch_queue_depth: int = 2,
    decode: bool = True,
) -> Pipeline:
    """A pipeline (not built) whose outputs are ("images", "labels", "sizes") for the batches of
    `source`; "sizes" are the decoded (height, width, channels), for `DaliLoader` to check.

    `source()` returns the next batch as `inputs` says, then its labels and its augmentation
    parameters (`dali_loader.feed`), or raises StopIteration at the end of the epoch. The graph
    draws nothing itself. Labels come out int64 (N,), on the images' device. `decode=False`
    replaces decoding and augmentation by the encoded sizes and the parameters: the input path.
    """
    freeze_in_forked_children()  # a child must not finalize this pipeline (`forking`)
    pipe = Pipeline(
        batch_size=spec.batch_size,
        num_threads=num_threads,
        device_id=device_id,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    with pipe:
        encoded, labels, drawn = _read(spec, inputs, source)
        if not decode:
            flat = [
                fn.cast(fn.reshape(node, shape=[-1]), dtype=types.FLOAT) for node in drawn.values()
            ]
            pipe.set_outputs(fn.cat(fn.cast(encoded.shape(), dtype=types.FLOAT), *flat), labels)
            return pipe  # (no "sizes": nothing is decoded)
        decoder = _MIXED_DECODER if device_id is not None else _CPU_DECODER
        plan = spec.plan
        images = _crop_stage(spec, encoded, drawn, decoder)
        mirror: Any = 0
        if plan.has_warp and not plan.warped:  # a mirror alone: crop_mirror_normalize's
            mirror = drawn["flips"]
        elif plan.warped:
            # DALI's own rounding to uint8 is half away from zero on the CPU (the fallback's
            # half up) but half to even on a GPU: there, floats, rounded as the fallback does
            # (a warp by an exact scale lands on .5 often)
            on_gpu = device_id is not None
            images = fn.warp_affine(
                images,
                matrix=drawn["matrices"],
                size=list(spec.image_size),
                fill_value=plan.warp_fill,
                interp_type=types.INTERP_LINEAR if plan.bilinear else types.INTERP_NN,
                inverse_map=True,
                dtype=types.FLOAT if on_gpu else types.UINT8,
            )
            images = _to_uint8(images) if on_gpu else images
        if plan.colors:
            images = _color_stage(plan, images, drawn, on_gpu=device_id is not None)
        images = fn.crop_mirror_normalize(
            images,
            dtype=_OUTPUT_DTYPES[spec.dtype],
            output_layout="HWC" if spec.channels_last else "CHW",
            mean=list(spec.mean_255),
            std=list(spec.std_255),
            mirror=mirror,
        )
        # The decoded size, from the header: the parameters were drawn for the size the check
        # recorded, and a file that changed since must not be cropped wrong without a word.
        sizes = fn.peek_image_shape(encoded, dtype=types.INT32)
        pipe.set_outputs(images, labels.gpu() if device_id is not None else labels, sizes)
    return pipe


def _read(spec: LoaderSpec, inputs: InputKind, source: Source) -> tuple[Any, Any, dict[str, Any]]:
    """The encoded files, int64 labels and augmentation parameters of a batch, as fed."""
    names = params.fields(spec)
    files = [types.UINT8, types.INT32] if inputs == "paths" else [types.UINT8]
    outputs = fn.external_source(
        source=source,
        num_outputs=len(files) + 1 + len(names),
        batch=True,
        no_copy=True,
        dtype=[*files, types.INT64, *(_param_dtype(name) for name in names)],
    )
    drawn = dict(zip(names, outputs[len(files) + 1 :], strict=True))
    labels = outputs[len(files)]
    if inputs == "bytes":
        return outputs[0], labels, drawn
    # File names as rows of one uint8 array, zero-padded, and their lengths: one array per
    # batch crosses from Python, and DALI's threads open and read the files.
    paths = fn.slice(outputs[0], 0, outputs[1], axes=[0], out_of_bounds_policy="error")
    return fn.io.file.read(paths, dont_use_mmap=True), labels, drawn


def _param_dtype(name: str) -> Any:
    return types.INT32 if name == "flips" else types.FLOAT


def _crop_stage(spec: LoaderSpec, encoded: Any, drawn: dict[str, Any], decoder: Any) -> Any:
    """The source box onto its place in the canvas, uint8 HWC: the box decoded alone where it
    is whole pixels (a region decode), else the whole image resized from the fractional box;
    padded where the crops pad."""
    plan = spec.plan
    box = drawn["boxes"]
    inner = drawn.get("inner")  # where the crops pad, or their sizes differ
    size = fn.stack(inner[2], inner[3]) if inner is not None else list(spec.crop_size or ())
    if plan.region:
        images = fn.decoders.image_slice(
            encoded,
            fn.stack(box[0], box[1]),  # anchor (x, y)
            fn.stack(box[2] - box[0], box[3] - box[1]),  # shape (width, height)
            normalized_anchor=False,
            normalized_shape=False,
            output_type=types.RGB,
            **decoder,
        )
        if plan.resized:
            images = fn.resize(images, size=size, antialias=True)
    else:
        images = fn.decoders.image(encoded, output_type=types.RGB, **decoder)
        images = fn.resize(
            images,
            size=size,
            roi_start=fn.stack(box[1], box[0]),  # (y, x): the tensor's own order
            roi_end=fn.stack(box[3], box[2]),
            roi_relative=False,
            antialias=True,
        )
    if inner is None or not plan.padded:
        return images
    assert spec.crop_size is not None  # padding onto canvases of one size (LoaderSpec says)
    return fn.slice(
        images,
        fn.stack(-inner[0], -inner[1]),
        [float(side) for side in spec.crop_size],
        axes=[0, 1],
        normalized_anchor=False,
        normalized_shape=False,
        out_of_bounds_policy="pad",
        fill_values=list(plan.pad_fill),
    )


_GRAY = params.GRAY.astype(np.float32).tolist()  # one output channel


_DALI = Ops(  # on HWC
    channel_max=lambda x: fn.reductions.max(x, axes=[2], keep_dims=True),
    channel_min=lambda x: fn.reductions.min(x, axes=[2], keep_dims=True),
    channel_sum=lambda x: fn.reductions.sum(x, axes=[2], keep_dims=True),
    mix=lambda x, matrix: fn.coord_transform(x, M=[v for row in matrix for v in row]),
    per_channel=lambda values: types.Constant(np.array(values, np.float32)),
    floor=dmath.floor,
    abs=dmath.abs,
    clamp=dmath.clamp,
    as_float=lambda mask: fn.cast(mask, dtype=types.FLOAT),
)


def _color_stage(plan: Plan, images: Any, drawn: dict[str, Any], *, on_gpu: bool) -> Any:
    """The color ops in order on floats (0..255), rounded back to uint8 once: the fallback's
    formulas (`fallback.augment`)."""

    def device(node: Any) -> Any:  # per-sample weights, next to the images
        return node.gpu() if on_gpu else node

    x = fn.cast(images, dtype=types.FLOAT)
    for k, op in enumerate(plan.colors):
        if isinstance(op, ColorJitter):
            for j in range(op.enabled):
                terms = fn.coord_transform(x, M=drawn[f"c{k}.m{j}"])
                if op.contrast is not None:  # (1, 1, 1) per image, broadcast
                    gray = fn.coord_transform(x, M=_GRAY)
                    mean = fn.reductions.mean(gray, axes=[0, 1], keep_dims=True)
                    terms = terms + device(drawn[f"c{k}.b{j}"]) * mean
                x = dmath.clamp(terms, 0.0, 255.0)
                if op.hue is not None:  # a turn of 0 for the images another property is at
                    x = turn_hue(x, device(drawn[f"c{k}.h{j}"]), _DALI)
        elif isinstance(op, Grayscale):
            x = fn.coord_transform(x, M=_GRAY if op.channels == 1 else drawn[f"c{k}.m0"])
        else:
            assert isinstance(op, GaussianBlur)
            kernel_x, kernel_y = op.kernel
            x = fn.gaussian_blur(
                fn.reshape(x, layout="HWC"),
                window_size=[kernel_y, kernel_x],
                sigma=drawn[f"c{k}.sigma"],
                dtype=types.FLOAT,
            )
    return _to_uint8(x)


def _to_uint8(x: Any) -> Any:
    """Round half up, as the fallback does: a cast's own rounding of .5 is not the same on
    every device (the color ops meet exact halves: 103 * 1.5)."""
    return fn.reshape(fn.cast(dmath.floor(x + 0.5), dtype=types.UINT8), layout="HWC")


PROBE_INPUT = "encoded"


def define_decode_probe(*, device_id: int | None) -> Pipeline:
    """A pipeline (not built) that only decodes one file fed to `PROBE_INPUT`, with the
    decoder the loader uses: it fails on what that decoder cannot read.

    Fed with `feed_input` and one batch in flight, an error belongs to the file just fed. The
    decoded image stays where the decoder put it (a GPU image is not copied back).
    """
    freeze_in_forked_children()
    pipe = Pipeline(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    with pipe:
        encoded = fn.external_source(name=PROBE_INPUT, dtype=types.UINT8)
        decoder = _MIXED_DECODER if device_id is not None else _CPU_DECODER
        pipe.set_outputs(fn.decoders.image(encoded, output_type=types.RGB, **decoder))
    return pipe


def build_or_explain(pipe: Pipeline) -> Pipeline:
    """Build `pipe`; a GPU pipeline where DALI finds no usable CUDA gets an error with the fix."""
    try:
        pipe.build()
    except RuntimeError as error:
        if pipe.device_id is None or "CUDA" not in str(error):
            raise
        raise BackendUnavailableError(
            f"DALI cannot start a pipeline on GPU {pipe.device_id}: {error_reason(error)}\n"
            "Check `dali-loader doctor`, or use backend='dali-cpu' or backend='torchvision'."
        ) from error
    return pipe


def error_reason(error: BaseException) -> str:
    """The line of a DALI error that says what went wrong (DALI's first lines only say where)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for k, line in enumerate(lines[:-1]):
        if line == "encountered:":
            return lines[k + 1][:200]
    return lines[0][:200] if lines else type(error).__name__


def decode_failures(paths: list[str], device_id: int | None, progress: bool) -> dict[str, str]:
    """Files DALI's decoder rejects, each decoded alone: in a batch DALI sometimes gets past a
    file that kills the pipeline when it comes alone (a final batch of one, say). A failure
    invalidates the pipeline, so each failure costs a rebuild; bad files are rare.

    A failure is the file's only if the rebuilt pipeline still decodes a known-good JPEG: a
    pipeline that cannot be built, or a decoder that fails on everything (a GPU out of memory,
    a broken driver), is the machine's fault, raised, and no verdict is kept. A file DALI
    decodes to other pixels than the other backend's (`imaging.rgb8` of PIL's upright decode:
    an EXIF orientation read differently, a PPM's maxval ignored) fails too: it would be
    delivered differently by the two backends, without a word."""
    workers = max(1, min(len(os.sched_getaffinity(0)), len(paths), _PROBE_THREADS))
    chunks = [paths[k::workers] for k in range(workers)]
    failed: dict[str, str] = {}
    known_good = _known_good_jpeg()

    def decode(pipe: Any, data: np.ndarray) -> np.ndarray:
        pipe.feed_input(PROBE_INPUT, [data])
        (images,) = pipe.run()
        cpu = images.as_cpu() if hasattr(images, "as_cpu") else images
        return np.asarray(cpu.at(0))

    def probe(chunk: list[str]) -> None:
        pipe = build_or_explain(define_decode_probe(device_id=device_id))
        for path in chunk:
            try:
                decoded = decode(pipe, np.fromfile(path, dtype=np.uint8))
            except Exception as error:  # DALI raises RuntimeError
                pipe = build_or_explain(define_decode_probe(device_id=device_id))
                try:
                    decode(pipe, known_good)
                except Exception as machine:
                    raise BackendUnavailableError(
                        f"DALI's decoder fails on a known-good JPEG too ({error_reason(machine)}"
                        f"), after {path} ({error_reason(error)}): the "
                        f"{'GPU or its driver' if device_id is not None else 'DALI install'} is "
                        "at fault, not the files. Check `dali-loader doctor`."
                    ) from machine
                failed[path] = error_reason(error)
            else:
                if (differs := _differs_from_pil(decoded, path)) is not None:
                    failed[path] = differs
            bar.update(1)

    with (
        tqdm(
            total=len(paths), desc="probing DALI", unit="file", disable=not (progress and paths)
        ) as bar,
        ThreadPoolExecutor(workers) as pool,
    ):
        list(pool.map(probe, chunks))
    return failed


# Mean difference (levels of 255) above which DALI's decode is not PIL's: the decoders' own
# differences stay near 0.2 (both libjpeg-turbo on the CPU; nvJPEG with fancy upsampling).
_SAME_PIXELS = 8.0


def _differs_from_pil(decoded: np.ndarray, path: str) -> str | None:
    """How DALI's decode of `path` differs from what the torchvision backend delivers, if it
    does: another shape (an orientation), or other levels."""
    with open_image(path) as image:
        expected = np.asarray(upright_rgb8(image))
    if decoded.shape != expected.shape:
        return (
            f"DALI decodes it as {decoded.shape[1]}x{decoded.shape[0]}, PIL as "
            f"{expected.shape[1]}x{expected.shape[0]} (EXIF orientation read differently)"
        )
    mean = float(np.abs(decoded.astype(np.int16) - expected.astype(np.int16)).mean())
    if mean > _SAME_PIXELS:
        return f"DALI's pixels are {mean:.0f} levels (of 255) from PIL's on average"
    return None


@functools.cache
def _known_good_jpeg() -> np.ndarray:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 160, 30)).save(buffer, "JPEG", quality=90)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)
