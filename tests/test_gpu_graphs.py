"""Every DALI graph the library builds for the GPU, defined with device_id=0 on every machine.

Defining a pipeline checks operator names, argument names, device placement and (for the
legacy executor) GPU->CPU transitions without a GPU; only building it needs CUDA, and errors DALI
finds only when it creates the operators (an argument's value out of range, say) show on a GPU
alone (benchmarks/gpu_proof.sh). A GPU graph that did not define once shipped untested and broke
every GPU machine before its first batch: here, any definition error fails CI, and without CUDA
the only error allowed is the missing GPU, raised at build as a clear BackendUnavailableError.
The same definitions with device_id=None are built and run, so each combination is a real graph.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dali_loader import BackendUnavailableError, create_loader, ops, params, pipeline
from dali_loader.pipeline import build_or_explain, define_decode_probe, define_pipeline
from dali_loader.spec import DTYPES, LoaderSpec

from .conftest import IMAGENET_MEAN, IMAGENET_STD, decode_indices, write_index_folder

# Op lists that take every branch of the graph: region decode or not, resize or not, padding
# or not, a flip among the crops; no warp, a mirror alone, a nearest or bilinear warp with a
# fill and a crop after it;
# every color op (ColorJitter with all four properties or one, RandomGrayscale, Grayscale(1),
# GaussianBlur), gated or not. The images are 48x48, the output 8x8.
_NORMALIZE = ops.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
OP_LISTS: dict[str, tuple[ops.Op, ...]] = {
    "train": LoaderSpec(image_size=(8, 8)).ops,
    "train-rotate": LoaderSpec(image_size=(8, 8), rotate_degrees=15).ops,
    "eval": LoaderSpec(image_size=(8, 8), train=False).ops,
    "random-crop": (ops.Flip(True, 0.5), ops.RandomCrop((8, 8)), _NORMALIZE),
    "padded-crop": (ops.RandomCrop((8, 8), (2, 2, 2, 2), fill=(9, 8, 7)), ops.Flip(False, 0.5)),
    "resize-then-pad": (
        ops.Resize((10, 9)),
        ops.RandomCrop((8, 8), (1, 1, 1, 1)),
        ops.CenterCrop((8, 8)),
    ),
    "affine": (
        ops.RandomResizedCrop((10, 10)),
        ops.Flip(False, 0.5),
        ops.Affine((-10, 10), (0.1, 0.1), (0.9, 1.1), (-5, 5, -5, 5), fill=128.0),
        ops.CenterCrop((8, 8)),
    ),
    "colors": (
        ops.Resize((8, 8)),
        ops.Affine((-10, 10), bilinear=True, gate=ops.Gate(0, 0.5)),
        ops.ColorJitter((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), (-0.1, 0.1), gate=ops.Gate(1, 0.8)),
        ops.Grayscale(3, 0.2),
        ops.GaussianBlur((3, 5), (0.1, 2.0)),
        _NORMALIZE,
    ),
    "gray": (
        ops.Resize((8, 8)),
        ops.ColorJitter(brightness=(0.5, 1.5)),
        ops.Grayscale(1),
        ops.GaussianBlur((3, 3), (0.1, 2.0), gate=ops.Gate(0, 0.5)),
        ops.Normalize((0.5,), (0.25,)),
    ),
}
# The spec fields that change the graph's structure, each varied over all its values below
# (the keyword recipe's fields become ops: varied through OP_LISTS).
VARIED = {"ops", "dtype", "channels_last"}
KEYWORD_RECIPE = {"train", "image_size", "scale", "ratio", "flip_prob", "rotate_degrees"}
# Found from the images (with_source_sizes): the branches they choose are the plans' flags,
# each taken by some entry of OP_LISTS.
FROM_THE_IMAGES = {"crop_size", "smallest_source"}
# The fields that only change an operator's argument values, never which operators run.
VALUES_ONLY = {
    "batch_size",
    "shuffle",
    "drop_last",
    "seed",
    "mean",
    "std",
    "shard_id",
    "num_shards",
}
DECODING = list(
    itertools.product(
        OP_LISTS,
        DTYPES,
        [False, True],  # channels_last
        ["paths", "bytes"],  # the feed: image folders, packed shards
        [True],  # decode
    )
)
# bench --feed-only: no decoding, so the augmentation does not reach the graph.
FEED_ONLY = [("train", "float32", False, inputs, False) for inputs in ("paths", "bytes")]
GRAPH_COMBOS = DECODING + FEED_ONLY


def _spec(name: str, dtype: str = "float32", channels_last: bool = False) -> LoaderSpec:
    return LoaderSpec(
        batch_size=2, ops=OP_LISTS[name], dtype=dtype, channels_last=channels_last
    ).with_source_sizes(np.array([[48, 48]]), ["a.jpg"])


def built_on_this_machine(pipe: Any) -> None:
    """Build a defined GPU pipeline: it runs where CUDA is, and fails only for want of it."""
    if torch.cuda.is_available():
        build_or_explain(pipe)
        return
    with pytest.raises(BackendUnavailableError, match="CUDA"):
        build_or_explain(pipe)


def test_every_spec_field_is_covered_by_the_graph_combinations() -> None:
    fields = {field.name for field in dataclasses.fields(LoaderSpec)}
    assert fields == VARIED | KEYWORD_RECIPE | FROM_THE_IMAGES | VALUES_ONLY, (
        "a LoaderSpec field was added or removed: vary it in GRAPH_COMBOS if it changes the "
        "graph's operators, else list it in VALUES_ONLY"
    )


def test_every_op_and_every_stage_branch_is_in_the_op_lists() -> None:
    used = {type(op) for listed in OP_LISTS.values() for op in listed}
    defined = {v for v in vars(ops).values() if isinstance(v, type) and issubclass(v, ops.Op)}
    assert used == defined - {ops.Op}, "a new op: add it to an OP_LISTS entry"
    plans = [_spec(name).plan for name in OP_LISTS]
    for flag in ("region", "resized", "padded", "mirror_only", "bilinear", "warped"):
        assert {bool(getattr(plan, flag)) for plan in plans} == {True, False}, flag
    assert {plan.channels for plan in plans} == {1, 3}


def test_every_graph_definer_is_tested() -> None:
    definers = {name for name in dir(pipeline) if name.startswith("define_")}
    assert definers == {"define_pipeline", "define_decode_probe"}, (
        "a new DALI graph: define it with device_id=0 in this file"
    )


@pytest.mark.parametrize(("name", "dtype", "channels_last", "inputs", "decode"), GRAPH_COMBOS)
def test_loader_graph_defines_on_the_gpu(
    name: str, dtype: str, channels_last: bool, inputs: Any, decode: bool
) -> None:
    spec = _spec(name, dtype, channels_last)
    pipe = define_pipeline(
        spec, lambda: None, inputs=inputs, device_id=0, num_threads=2, decode=decode
    )
    built_on_this_machine(pipe)


def test_decode_probe_defines_on_the_gpu() -> None:
    built_on_this_machine(define_decode_probe(device_id=0))


def test_the_cpu_graphs_of_every_combination_build_and_run(tmp_path: Path) -> None:
    """The same definitions with device_id=None build here: the combinations are real graphs."""
    root = write_index_folder(tmp_path / "data", [2])
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    names = np.array([f.encode() for f in files], dtype=np.bytes_)
    by_kind = {
        "paths": (
            names.view(np.uint8).reshape(len(files), -1),
            np.char.str_len(names).astype(np.int32)[:, None],
        ),
        "bytes": ([np.fromfile(f, np.uint8) for f in files],),
    }
    for name, dtype, channels_last, inputs, decode in GRAPH_COMBOS:
        spec = _spec(name, dtype, channels_last)
        drawn = params.draw(spec, 0, np.arange(2), np.array([[48, 48], [48, 48]]))
        batch = (*by_kind[inputs], np.arange(2, dtype=np.int64))
        batch += tuple(drawn.arrays[field] for field in params.fields(spec))
        pipe = define_pipeline(
            spec,
            _returning(batch),
            inputs=inputs,
            device_id=None,
            num_threads=1,
            decode=decode,
        )
        images, labels, *sizes = build_or_explain(pipe).run()
        assert np.array(labels.as_tensor()).tolist() == [0, 1]
        if decode:
            c = spec.channels
            assert images.as_tensor().shape() == ([2, 8, 8, c] if channels_last else [2, c, 8, 8])
            assert np.array(sizes[0].as_tensor()).tolist() == [[48, 48, 3], [48, 48, 3]]


def _returning(batch: Any) -> Any:
    """A source without parameters (DALI passes one to a source that takes any)."""
    return lambda: batch


@pytest.fixture
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch believes there is one GPU; DALI, which asks the driver itself, finds none."""
    if torch.cuda.is_available():
        pytest.skip("a real GPU is here: the contract tests run backend='dali' for real")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Mocked GPU")


def test_create_loader_dali_reaches_the_probe_build(tmp_path: Path, cuda_present: None) -> None:
    """Factory -> check -> GPU decode probe: every step up to the probe's build runs."""
    root = write_index_folder(tmp_path / "data", [3, 2])
    with pytest.raises(BackendUnavailableError, match="cannot start a pipeline on GPU 0") as error:
        create_loader(root, backend="dali", batch_size=2, image_size=16)
    assert "define_decode_probe" not in str(error.value)
    assert any(entry.name == "decode_failures" for entry in error.traceback)


@pytest.mark.parametrize("packed", [False, True])
def test_create_loader_dali_reaches_the_loader_build(
    tmp_path: Path, cuda_present: None, monkeypatch: pytest.MonkeyPatch, packed: bool
) -> None:
    """Factory -> check (the probe's verdict given) -> feed -> GPU loader graph -> build."""
    from dali_loader.packing import pack

    root = write_index_folder(tmp_path / "data", [3, 2])
    if packed:
        root = pack(root, tmp_path / "packed", progress=False).parent
    monkeypatch.setattr(pipeline, "decode_failures", lambda paths, device_id, progress: {})
    with pytest.raises(BackendUnavailableError, match="cannot start a pipeline on GPU 0") as error:
        create_loader(root, backend="dali", batch_size=2, image_size=16, rotate_degrees=10)
    frames = [(Path(str(entry.path)).name, entry.name) for entry in error.traceback]
    assert ("iterator.py", "__init__") in frames  # DaliLoader got as far as building its graph


class _Overwriting(deque):  # type: ignore[type-arg]
    """A keep-alive queue that scribbles over each batch it lets go of, as reused memory would."""

    def append(self, arrays: Any) -> None:
        if self.maxlen is not None and len(self) == self.maxlen:
            for array in _arrays_in(self[0]):
                array[...] = 0xEE
        super().append(arrays)


def _arrays_in(batch: Any) -> list[np.ndarray]:
    """The arrays of a fed batch; a packed batch's samples are DALI tensors over the read
    buffer, and `np.asarray` of one is a view of those bytes."""
    found: list[np.ndarray] = []
    for part in batch:
        found += [np.asarray(p) for p in part] if isinstance(part, list) else [part]
    return found


@pytest.mark.parametrize("packed", [False, True])
def test_batches_given_without_a_copy_live_until_dali_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, packed: bool
) -> None:
    """DALI reads what the feed hands it without copying, prefetch_queue_depth batches later:
    memory reused any sooner would show here as wrong samples or a failed decode."""
    from dali_loader import feed

    original = feed.EpochFeed.__init__

    def overwriting(self: Any, *args: Any) -> None:
        original(self, *args)
        self._alive = _Overwriting(maxlen=self._alive.maxlen)

    monkeypatch.setattr(feed.EpochFeed, "__init__", overwriting)
    root = write_index_folder(tmp_path / "data", [9, 8])
    if packed:
        from dali_loader.packing import pack

        root = pack(root, tmp_path / "packed", shard_size=8 << 10, progress=False).parent
    loader = create_loader(
        root, backend="dali-cpu", train=False, shuffle=True, batch_size=2, image_size=16
    )
    for _ in range(2):
        seen, labels = [], []
        for images, batch_labels in loader:
            seen += decode_indices(images, IMAGENET_MEAN, IMAGENET_STD)
            labels += batch_labels.tolist()
        assert sorted(seen) == list(range(17))
        assert labels == [0 if i < 9 else 1 for i in seen]


def test_a_decoder_that_fails_on_everything_is_the_machines_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe blames a file only when a known-good JPEG still decodes after it."""
    from nvidia.dali import fn, types
    from nvidia.dali.pipeline import Pipeline

    from dali_loader.check import check_dataset

    def broken(*, device_id: int | None) -> Pipeline:
        pipe = Pipeline(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
        with pipe:
            encoded = fn.external_source(name=pipeline.PROBE_INPUT, dtype=types.UINT8)
            cut = fn.slice(encoded, 0, 12, axes=[0])  # every file cut short: nothing decodes
            pipe.set_outputs(fn.decoders.image(cut, output_type=types.RGB))
        return pipe

    monkeypatch.setattr(pipeline, "define_decode_probe", broken)
    root = write_index_folder(tmp_path / "data", [2])
    with pytest.raises(BackendUnavailableError, match=r"known-good JPEG too.*not the files"):
        check_dataset(root, probe_dali=True, use_cache=False, progress=False)
