"""Two ranks under torch.distributed.run (gloo, CPU): disjoint, complete shards, equal counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dali_loader.packing import pack

from .conftest import write_index_folder

ROOT = Path(__file__).resolve().parents[1]


def _two_ranks(script: str, data: Path, *args: str) -> Path:
    """Run tests/`script` DATA [ARGS] OUT on two ranks under torch.distributed.run; its OUT."""
    out = data.parent / "out"
    out.mkdir()
    # Prepended, not replaced: DALI staged on PYTHONPATH (the GPU proof) must reach the ranks.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(ROOT / "tests" / script),
            str(data),
            *args,
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.mark.parametrize(
    ("count", "with_bad_files", "packed"),
    # 17 over 2 ranks of batch 4: one rank's batch splits
    [(21, False, False), (17, False, False), (17, True, False), (17, False, True)],
)
def test_two_ranks_share_every_epoch_exactly(
    tmp_path: Path, backend: str, count: int, with_bad_files: bool, packed: bool
) -> None:
    data = write_index_folder(tmp_path / "data", [count - count // 2, count // 2], size=(48, 48))
    if with_bad_files:  # skipped by every rank alike: the good files are still shared exactly
        (data / "class_00" / "empty.jpg").write_bytes(b"")
        (data / "class_01" / "page.jpg").write_bytes(b"<html></html>")
    if packed:
        data = pack(data, tmp_path / "packed", shard_size=8 << 10, progress=False).parent
    out = _two_ranks("dist_worker.py", data, backend, "skip" if with_bad_files else "raise")
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["shard"] for r in ranks] == [[0, 2], [1, 2]]  # taken from torch.distributed
    for epoch in range(2):
        per_rank = [r["epochs"][epoch] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == ranks[0]["len"] == ranks[1]["len"]
        got = [i for batches in per_rank for batch in batches for i in batch]
        assert sorted(got) == list(range(count))
    assert ranks[0]["epochs"][0] != ranks[0]["epochs"][1]


def test_ranks_that_list_different_samples_refuse(tmp_path: Path) -> None:
    out = _two_ranks("dist_mismatch.py", write_index_folder(tmp_path / "data", [5]))
    for rank in range(2):
        message = json.loads((out / f"rank{rank}.json").read_text())
        assert "the ranks see different data sets (rank 0: 4 samples" in message
        assert "rank 1: 3 samples" in message
