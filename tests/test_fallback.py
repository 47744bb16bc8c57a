"""The torchvision backend's own pieces, against torchvision's reference implementations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dali_loader.spec import LoaderSpec


def test_fallback_imports_on_its_own() -> None:
    import subprocess
    import sys

    code = (
        "import fallback, dali_loader; "
        "assert dali_loader.TorchvisionLoader is fallback.TorchvisionLoader"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("rotate_degrees", "dtype", "channels_last"),
    [(0.0, torch.float32, False), (20.0, torch.float32, True), (0.0, torch.bfloat16, True)],
)
def test_batches_are_the_uint8_levels_normalized_once(
    small_folder: Path, rotate_degrees: float, dtype: torch.dtype, channels_last: bool
) -> None:
    # Workers make uint8 levels (what a GPU gets) and normalize them on the CPU. The result must
    # be (pixels - mean) / std of exactly those pixels, in the requested dtype and memory format.
    from dali_loader import create_loader
    from dali_loader.index import build_index
    from dali_loader.storage import reader_for
    from fallback.buffers import batch_memory
    from fallback.dataset import BatchDataset

    loader = create_loader(
        small_folder,
        batch_size=8,
        backend="torchvision",
        image_size=32,
        shuffle=False,
        num_threads=0,
        rotate_degrees=rotate_degrees,
        dtype=dtype,
        channels_last=channels_last,
    )
    images, _ = next(iter(loader))
    index = build_index(small_folder)
    spec = LoaderSpec(image_size=(32, 32), rotate_degrees=rotate_degrees, shuffle=False)
    slots = batch_memory(2, 8, (3, 32, 32), torch.uint8, channels_last=False, shared=False)
    batches = BatchDataset(reader_for(index), spec, loader.dataset.sizes, slots)
    raw = slots[batches[(0, np.arange(8), 1)]]  # type: ignore[index]
    assert raw.dtype == torch.uint8
    mean = torch.tensor(spec.mean_255).view(1, 3, 1, 1)
    std = torch.tensor(spec.std_255).view(1, 3, 1, 1)
    assert images.dtype == dtype
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert images.is_contiguous(memory_format=layout)
    tolerance = 1e-5 if dtype == torch.float32 else 0.02
    assert torch.allclose(images.float(), (raw.float() - mean) / std, atol=tolerance)


def test_region_decode_has_the_full_decodes_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # The crop's region decoded alone (nvImageCodec, installed with DALI) must be the same pixels
    # as the full decode cropped (simplejpeg, the way without nvImageCodec): odd offsets, edges,
    # 4:2:0 chroma, widths and heights that are not multiples of 16.
    import simplejpeg

    from fallback import augment
    from tests.conftest import natural_jpeg

    assert augment._region_decoder() is not None  # CI installs DALI, and so nvImageCodec
    rng = np.random.default_rng(0)
    for seed, (width, height) in enumerate([(500, 375), (375, 500), (97, 61), (16, 16)]):
        encoded = natural_jpeg(width, height, seed=seed)
        full = torch.from_numpy(simplejpeg.decode_jpeg(encoded))
        for _ in range(40):
            left, right = sorted(rng.choice(width + 1, 2, replace=False).tolist())
            top, bottom = sorted(rng.choice(height + 1, 2, replace=False).tolist())
            box = (left, top, right, bottom)
            region = augment._decode_jpeg_region(encoded, box)
            assert region is not None
            assert torch.equal(region, full[top:bottom, left:right]), box
            monkeypatch.setattr(augment, "nvimgcodec", None)
            monkeypatch.setattr(augment, "_decoders", {})
            assert torch.equal(augment._decode_jpeg_region(encoded, box), region)  # type: ignore[arg-type]
            monkeypatch.undo()


@pytest.mark.parametrize("channels_last", [False, True])
def test_a_lent_slot_is_taken_again_only_once_nobody_holds_it(channels_last: bool) -> None:
    from fallback.buffers import BatchSlots, batch_memory

    memory = batch_memory(
        3, 4, (3, 5, 6), torch.bfloat16, channels_last=channels_last, shared=False
    )
    slots = BatchSlots(memory)
    first, second = slots.take(), slots.take()
    assert {first, second} == {0, 1}
    memory[first].fill_(1.5)
    batch = slots.lend(first, 3)
    assert batch.shape == (3, 3, 5, 6) and batch.dtype == torch.bfloat16
    assert batch.stride() == memory[first, :3].stride()  # the slot's memory format
    assert batch.data_ptr() == memory[first].data_ptr() and (batch == 1.5).all()
    view = batch[1:].float()[0:1]  # not the same memory: does not hold the slot
    row = batch[2]
    del batch
    assert slots.take() == 2  # the first is held through `row`, the second requested
    assert slots.take() == -1
    del row, view
    assert slots.take() == first
    slots.give_back(second)  # copied out (to a GPU)
    assert slots.take() == second
    slots.new_epoch()  # the requests of the epoch before are done
    assert sorted(slots.take() for _ in range(3)) == [0, 1, 2]


@pytest.mark.parametrize(
    ("dtype", "channels_last"), [(torch.float32, False), (torch.bfloat16, True)]
)
def test_without_room_for_float_slots_the_loop_normalizes_the_same_batches(
    small_folder: Path, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, channels_last: bool
) -> None:
    # A /dev/shm that holds uint8 slots but not float ones (Docker's 64 MB at batch 64):
    # the workers hand over uint8 and the training thread normalizes them, to the same values
    # in the same memory format.
    from dali_loader import create_loader
    from fallback import loader as loader_module

    kw = dict(batch_size=4, backend="torchvision", image_size=16, rotate_degrees=10, seed=3)
    kw.update(dtype=dtype, channels_last=channels_last)
    lent = list(create_loader(small_folder, num_threads=1, **kw))
    small = 6 * 4 * 3 * 16 * 16  # every uint8 slot, not a float one
    monkeypatch.setattr(loader_module, "shm_free", lambda: small)
    normalized = create_loader(small_folder, num_threads=1, **kw)
    assert normalized._slots.batches.dtype == torch.uint8  # type: ignore[attr-defined]
    for (x, y), (a, b) in zip(lent, normalized, strict=True):
        assert torch.equal(x, a) and torch.equal(y, b) and x.stride() == a.stride()


def test_a_loop_that_keeps_every_batch_holds_no_file_descriptor_per_batch(
    small_folder: Path,
) -> None:
    # Batches a worker wrote into fresh shared memory (every slot held) each kept a descriptor
    # open while they lived, under torch's sharing: 420 kept batches under a limit of 256 ran
    # out ("Too many open files"). They are copied out of it.
    import subprocess
    import sys

    code = f"""
import resource, torch
from dali_loader import create_loader
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
loader = create_loader({str(small_folder)!r}, backend="torchvision", batch_size=1,
                       image_size=8, num_threads=2, seed=1)
kept = [images for _ in range(20) for images, _ in loader]
assert len(kept) == 420 and not any(images.is_shared() for images in kept[-100:])
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_reused_batches_reuse_only_what_nobody_holds() -> None:
    from fallback.buffers import ReusedBatches

    batches = ReusedBatches(keep=2)
    first = batches.tensor((2, 3, 4, 5))
    address = first.data_ptr()
    view = first[1:]
    del first
    second = batches.tensor((2, 3, 4, 5))
    assert address not in (second.data_ptr(), batches.tensor((2, 3, 4, 5)).data_ptr())
    del view  # the loop's pattern: hold one batch while the next is made
    assert batches.tensor((2, 3, 4, 5)).data_ptr() == address
    held = [batches.tensor((2, 3, 4, 5)) for _ in range(3)]  # more than kept: fresh memory
    assert len({t.data_ptr() for t in held}) == 3
    channels_last = batches.tensor((2, 4, 5, 3), axes=(0, 3, 1, 2))
    assert channels_last.shape == (2, 3, 4, 5)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)


def test_workers_started_by_forkserver_fill_the_same_batches(small_folder: Path) -> None:
    # Python 3.14 starts DataLoader workers with forkserver by default: the batch slots then
    # travel pickled (torch passes shared memory by handle), not inherited by fork, and must
    # still be the memory the loader reads.
    import subprocess
    import sys

    code = f"""
import multiprocessing, torch
from dali_loader import create_loader
if __name__ == "__main__":
    multiprocessing.set_start_method("forkserver", force=True)
    kw = dict(batch_size=4, backend="torchvision", image_size=16, rotate_degrees=10, seed=1)
    with_workers = list(create_loader({str(small_folder)!r}, num_threads=2, **kw))
    in_process = list(create_loader({str(small_folder)!r}, num_threads=0, **kw))
    assert len(with_workers) == 6
    for (x, y), (a, b) in zip(with_workers, in_process, strict=True):
        assert torch.equal(x, a) and torch.equal(y, b)
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_a_worker_never_finalizes_a_dali_pipeline_it_inherited(small_folder: Path) -> None:
    # A dali-cpu loader dropped in a reference cycle, still uncollected when a torchvision
    # loader forks its workers: a worker whose garbage collector found the pipeline hung in its
    # finalizer, which waits for DALI threads that only the parent has. The hook, registered
    # before any of the library's, makes every child collect at once, as a child's first
    # allocations may: only the parent's freeze around the fork (`forking`) guards this one.
    _run_without_hanging(f"""
import gc, os
{_DROPPED_DALI_LOADER.format(root=str(small_folder))}
os.register_at_fork(after_in_child=gc.collect)
drop_a_dali_loader()
loader = create_loader({str(small_folder)!r}, backend="torchvision", num_threads=2, **kw)
assert sum(len(labels) for _, labels in loader) == 21
""")


def test_a_users_own_workers_never_finalize_a_dali_pipeline(small_folder: Path) -> None:
    # The same for a fork the library does not make: the user's own DataLoader (a validation
    # set, say). Each child forked by a process that defined a DALI pipeline freezes what it
    # inherited first thing; a collection right after (this hook) finds nothing to finalize.
    _run_without_hanging(f"""
import gc, os
from torch.utils.data import DataLoader
{_DROPPED_DALI_LOADER.format(root=str(small_folder))}
drop_a_dali_loader()
os.register_at_fork(after_in_child=gc.collect)
assert len(list(DataLoader(list(range(8)), batch_size=4, num_workers=2))) == 2
""")


_DROPPED_DALI_LOADER = """
import multiprocessing
multiprocessing.set_start_method("fork", force=True)  # what is inherited: fork's case
from dali_loader import create_loader
gc.disable()  # the parent keeps its garbage until the fork
kw = dict(batch_size=4, image_size=16, seed=1)
def drop_a_dali_loader():
    dropped = create_loader({root!r}, backend="dali-cpu", num_threads=1, **kw)
    next(iter(dropped))
    dropped.cycle = dropped  # garbage only the collector frees
"""


def _run_without_hanging(code: str) -> None:
    import contextlib
    import os
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        assert process.wait(timeout=60) == 0
    finally:  # a hung worker would outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
