"""The dali-loader command: demo, bench (a smoke run on tiny data) and preview."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dali_loader.cli import main


def test_demo_runs_and_says_what_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["demo", "--root", str(tmp_path / "d"), "--images", "24", "--batch-size", "8"]
    assert main([*args, "--epochs", "2", "--backend", "dali-cpu"]) == 0
    out = capsys.readouterr().out
    assert "backend: dali-cpu on cpu; 24 images, 10 classes, 3 batches of 8" in out
    assert "epoch 1: 24 images in" in out and "img/s" in out


def test_bench_smoke_run_writes_json_and_chart(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--images",
            "12",
            "--data-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--rotate",
            "0",
            "15",
            "--workers",
            "1",
            "--out",
            str(out),
            "--loaders",
            "baseline",
            "torchvision",
            "dali-cpu",
        ]
    )
    assert code == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["machine"]["cores"] >= 1 and report["machine"]["dali"]
    results = report["results"]
    assert [(r["case"]["loader"], r["case"]["rotate_degrees"]) for r in results] == [
        (loader, rotate)
        for rotate in (0.0, 15.0)
        for loader in ("baseline", "torchvision", "dali-cpu")
    ]
    for r in results:
        assert r["error"] is None
        assert r["images_per_epoch"] == 12 and r["images_per_second"] > 0
        assert r["peak_rss_mb"] > 50 and r["first_batch_seconds"] > 0
        assert 50 < r["pss_mb"] <= r["peak_rss_mb"]  # shared pages split, not counted per process
        assert r["ratio_to_baseline"] == pytest.approx(
            r["images_per_second"]
            / next(
                b["images_per_second"]
                for b in results
                if b["case"]["loader"] == "baseline"
                and b["case"]["rotate_degrees"] == r["case"]["rotate_degrees"]
            )
        )
    assert Image.open(out / "bench.png").size[0] > 400


def test_bench_reports_a_failing_case_instead_of_hiding_it(tmp_path: Path) -> None:
    code = main(
        [
            "bench",
            "--root",
            str(tmp_path / "missing"),
            "--epochs",
            "1",
            "--rotate",
            "0",
            "--loaders",
            "torchvision",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 1
    result = json.loads((tmp_path / "out" / "bench.json").read_text())["results"][0]
    assert "does not exist" in result["error"]


def test_preview_draws_one_row_per_backend_plus_eval(small_folder: Path, tmp_path: Path) -> None:
    output = tmp_path / "grid.png"
    assert (
        main(
            [
                "preview",
                str(small_folder),
                "-o",
                str(output),
                "--samples",
                "4",
                "--image-size",
                "32",
                "--backends",
                "torchvision",
                "dali-cpu",
            ]
        )
        == 0
    )
    grid = np.asarray(Image.open(output).convert("RGB")).astype(int)
    assert grid.shape == (3 * 40, 150 + 4 * 36 + 4, 3)  # 3 rows of 32 px tiles, 4 px padding
    eval_row, torchvision_row, dali_row = (grid[40 * r + 4 : 40 * r + 36, 150:] for r in range(3))
    assert np.abs(torchvision_row - eval_row).mean() > 1  # train rows are augmented
    assert np.abs(dali_row - eval_row).mean() > 1


def test_preview_of_a_folder_with_a_bad_file_leaves_it_out_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import write_index_folder

    root = write_index_folder(tmp_path / "data", [4])
    (root / "class_00" / "bad.jpg").write_bytes(b"<html>not an image</html>")
    command = ["preview", str(root), "-o", str(tmp_path / "grid.png"), "--samples", "2"]
    command += ["--image-size", "16", "--backends", "torchvision"]
    assert main(command) != 0
    assert "--on-bad-file skip" in capsys.readouterr().err
    assert main([*command, "--on-bad-file", "skip"]) == 0


def test_memory_scaling_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "bench",
            "--memory-scaling",
            "--images",
            "6",
            "--data-dir",
            str(tmp_path),
            "--batch-size",
            "4",
            "--workers",
            "1",
            "--out",
            str(out),
            "--loaders",
            "torchvision",
            "dali-cpu",
        ]
    )
    assert code == 0
    rows = json.loads((out / "memory.json").read_text())["memory_scaling"]
    assert [(r["loader"], r["scale"], r["samples"]) for r in rows] == [
        ("torchvision", 1, 6),
        ("dali-cpu", 1, 6),
        ("torchvision", 10, 60),
        ("dali-cpu", 10, 60),
    ]
    assert all(r["error"] is None and r["peak_rss_mb"] > 50 for r in rows)
    assert rows[2]["data_mb"] > 9 * rows[0]["data_mb"]


def test_bench_feed_only_measures_the_input_path_of_a_folder_and_its_shards(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    args = ["bench", "--feed-only", "--images", "12", "--data-dir", str(tmp_path)]
    assert main([*args, "--epochs", "1", "--batch-size", "4", "--out", str(out)]) == 0
    results = json.loads((out / "bench.json").read_text())["results"]
    assert [r["case"]["loader"] for r in results] == ["dali-feed-only", "dali-feed-only"]
    assert [Path(r["case"]["root"]).name for r in results] == ["bench-12", "bench-12-packed"]
    for r in results:
        assert r["error"] is None
        assert r["images_per_epoch"] == 12 and r["images_per_second"] > 0
        assert r["loop_thread_us_per_image"] > 0


def test_doctor_says_what_the_machine_has_and_what_auto_picks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import nvidia.dali
    import torch

    code = main(["doctor"])
    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("!")]
    assert code == (1 if problems else 0)  # exit 1 names the problem, e.g. a small /dev/shm
    assert re.search(rf"DALI +nvidia-dali-cuda1\d0 {re.escape(nvidia.dali.__version__)}", out)
    assert re.search(r"/dev/shm +[\d.]+ GiB, [\d.]+ GiB free", out)
    if not torch.cuda.is_available():
        assert re.search(r"GPU +none visible to torch", out)
        assert re.search(r"backend='auto' +torchvision: no CUDA GPU visible", out)


def test_help_starts_without_importing_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dali_loader.cli as cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'PIL', 'numpy', 'nvidia.dali') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
