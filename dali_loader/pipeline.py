"""The DALI graph, built from a `LoaderSpec`: the only module that uses DALI's operators.

Encoded files and labels come in through `external_source`, in the order the sampler chose, so
DALI never decides the order (its reader shuffles only inside a buffer). On the GPU, decoding is
nvJPEG (`device="mixed"`, the hardware decoder where the GPU has one) with the random crop fused
into the decode; flip, rotation and normalization follow on the GPU. With `device_id=None` the
same graph runs on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nvidia.dali.math as dmath
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from .spec import LoaderSpec

# nvJPEG allocation hints for ImageNet-like images (from DALI's ResNet-50 example): they avoid
# reallocations in the first epochs. Used on the GPU only.
_MIXED_DECODER_HINTS: dict[str, Any] = {
    "device_memory_padding": 211025920,
    "host_memory_padding": 140544512,
    "preallocate_width_hint": 5980,
    "preallocate_height_hint": 6430,
    # The CPU decoder and PIL upsample chroma this way; keeps the backends' pixels in agreement.
    "jpeg_fancy_upsampling": True,
}

_OUTPUT_DTYPES = {"float32": types.FLOAT, "float16": types.FLOAT16, "bfloat16": types.FLOAT}

Source = Callable[[], Any]


def build_pipeline(
    spec: LoaderSpec,
    source: Source,
    *,
    device_id: int | None,
    num_threads: int,
    prefetch_queue_depth: int = 2,
) -> Pipeline:
    """A built pipeline whose outputs are ("images", "labels") for the batches `source` returns.

    `source()` returns (encoded images as uint8 arrays, int32 labels) for the next batch, or
    raises StopIteration at the end of the epoch. `device_id=None` runs everything on the CPU.
    """
    pipe = Pipeline(
        batch_size=spec.batch_size,
        num_threads=num_threads,
        device_id=device_id,
        seed=spec.seed * 1000 + spec.shard_id + 1,
        prefetch_queue_depth=prefetch_queue_depth,
    )
    with pipe:
        encoded, labels = fn.external_source(
            source=source, num_outputs=2, batch=True, dtype=[types.UINT8, types.INT32]
        )
        decoder: dict[str, Any] = (
            {"device": "mixed", **_MIXED_DECODER_HINTS}
            if device_id is not None
            else {"device": "cpu"}
        )
        if spec.train:
            images, mirror = _train_images(spec, encoded, decoder)
        else:
            images, mirror = _eval_images(spec, encoded, decoder), 0
        images = fn.crop_mirror_normalize(
            images,
            dtype=_OUTPUT_DTYPES[spec.dtype],
            output_layout="HWC" if spec.channels_last else "CHW",
            mean=list(spec.mean_255),
            std=list(spec.std_255),
            mirror=mirror,
        )
        pipe.set_outputs(images, labels)
    pipe.build()
    return pipe


def _train_images(spec: LoaderSpec, encoded: Any, decoder: dict[str, Any]) -> tuple[Any, Any]:
    """Random-resized crop fused into the decode, resize, optional rotation; flip is drawn."""
    images = fn.decoders.image_random_crop(
        encoded,
        output_type=types.RGB,
        random_area=list(spec.scale),
        random_aspect_ratio=list(spec.ratio),
        num_attempts=10,
        **decoder,
    )
    images = fn.resize(images, size=list(spec.image_size), antialias=True)
    if spec.rotate_degrees > 0:
        degrees = spec.rotate_degrees
        images = fn.rotate(
            images,
            angle=fn.random.uniform(range=[-degrees, degrees]),
            keep_size=True,
            fill_value=0,
            interp_type=types.INTERP_LINEAR,
        )
    return images, fn.random.coin_flip(probability=spec.flip_prob)


def _eval_images(spec: LoaderSpec, encoded: Any, decoder: dict[str, Any]) -> Any:
    """Shorter side to `resize_size`, center crop `image_size`, as one resize of a region.

    The region is computed from the encoded header without rounding the intermediate size, the
    same geometry the torchvision backend uses (`fallback.geometry.eval_box`).
    """
    shape = fn.peek_image_shape(encoded, dtype=types.FLOAT)
    height, width = shape[0], shape[1]
    out_h, out_w = spec.image_size
    scale = spec.resize_size / dmath.min(height, width)
    rel_h = out_h / (scale * height)
    rel_w = out_w / (scale * width)
    start = fn.stack((1 - rel_h) / 2, (1 - rel_w) / 2)
    end = fn.stack((1 + rel_h) / 2, (1 + rel_w) / 2)
    images = fn.decoders.image(encoded, output_type=types.RGB, **decoder)
    return fn.resize(
        images,
        size=list(spec.image_size),
        roi_start=start,
        roi_end=end,
        roi_relative=True,
        antialias=True,
    )


def build_decode_probe(source: Source, *, batch_size: int, device_id: int | None) -> Pipeline:
    """A pipeline that only decodes, as the loader would: it fails on what DALI cannot read."""
    # Synchronous, no prefetch: an error must belong to the batch just fed.
    pipe = Pipeline(
        batch_size=batch_size,
        num_threads=1,
        device_id=device_id,
        seed=0,
        prefetch_queue_depth=1,
        exec_pipelined=False,
        exec_async=False,
    )
    with pipe:
        encoded = fn.external_source(source=source, batch=True, dtype=types.UINT8)
        decoder = {"device": "mixed", **_MIXED_DECODER_HINTS} if device_id is not None else {}
        images = fn.decoders.image(encoded, output_type=types.RGB, **decoder)
        pipe.set_outputs(images.shape())
    pipe.build()
    return pipe
