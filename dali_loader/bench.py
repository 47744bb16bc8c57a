"""`dali-loader bench`: images/s of each backend against the plain DataLoader, in one run.

Every case (a loader at one rotation setting) runs in a fresh subprocess, so no case inherits
another's threads, workers or allocations, and the parent samples the peak resident memory of the
case's whole process tree (workers included); after the timed epochs the case reads the tree's
proportional set size, which counts shared pages once. Throughput is the median over the measured
epochs after one warm-up epoch; the ratio is to the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BASELINE = "baseline"
# The DALI loader's host side alone: its feed and pipeline, decoding replaced by a no-op.
FEED_ONLY = "dali-feed-only"


@dataclass
class Case:
    """One measurement: a loader, an augmentation setting, a data set."""

    loader: str  # "baseline" or a backend name
    root: str
    rotate_degrees: float
    batch_size: int
    epochs: int  # measured epochs, after one warm-up epoch
    workers: int


@dataclass
class Result:
    case: Case
    images_per_epoch: int = 0
    epoch_seconds: list[float] = field(default_factory=list)
    images_per_second: float = 0.0
    first_batch_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    pss_mb: float = 0.0  # after the timed epochs, the loader alive
    peak_gpu_mb: float | None = None
    # CPU time of the training loop's thread per image, measured epochs only: the serial part.
    loop_thread_us_per_image: float = 0.0
    ratio_to_baseline: float | None = None
    error: str | None = None


def run_case(case: Case) -> Result:
    """Time one case in this process (the subprocess side)."""
    import torch

    # Imported before the clock starts, as a training script has them by its first batch.
    import torchvision.datasets
    import torchvision.transforms  # noqa: F401

    from . import factory, iterator  # noqa: F401
    from .backends import synchronize

    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    start = time.perf_counter()
    loader = _build(case, device)
    result = Result(case=case)
    gpu_peak = 0.0
    loop_thread_seconds = 0.0
    for epoch in range(case.epochs + 1):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        epoch_start, epoch_cpu, seen = time.perf_counter(), time.thread_time(), 0
        for images, labels in loader:
            if case.loader == BASELINE:  # the baseline's loop moves batches itself
                images = images.to(device, non_blocking=True)
                labels = labels.to(device, non_blocking=True)
            if seen == 0 and epoch == 0:
                synchronize(device)
                result.first_batch_seconds = time.perf_counter() - start
            seen += len(labels)
            if device.type == "cuda":
                free, total = torch.cuda.mem_get_info(device)
                gpu_peak = max(gpu_peak, (total - free) / 2**20)
        synchronize(device)
        if epoch > 0:  # epoch 0 warms up: workers, caches, nvJPEG allocations
            result.epoch_seconds.append(time.perf_counter() - epoch_start)
            loop_thread_seconds += time.thread_time() - epoch_cpu
        result.images_per_epoch = seen
    result.images_per_second = seen / statistics.median(result.epoch_seconds)
    result.loop_thread_us_per_image = loop_thread_seconds / (seen * case.epochs) * 1e6
    result.pss_mb = _tree_pss_bytes(os.getpid()) / 2**20
    result.peak_gpu_mb = gpu_peak if device.type == "cuda" else None
    return result


def _build(case: Case, device: Any) -> Any:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from .factory import create_loader

    if case.loader == FEED_ONLY:
        return _feed_only_loader(case)
    if case.loader != BASELINE:
        return create_loader(
            case.root,
            batch_size=case.batch_size,
            backend=case.loader,
            rotate_degrees=case.rotate_degrees,
            num_threads=case.workers,
        )
    steps: list[Any] = [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip()]
    if case.rotate_degrees:
        # Bilinear, as every backend of ours rotates (torchvision's default is nearest).
        interpolation = transforms.InterpolationMode.BILINEAR
        steps.append(transforms.RandomRotation(case.rotate_degrees, interpolation=interpolation))
    steps += [
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ]
    dataset = datasets.ImageFolder(case.root, transforms.Compose(steps))
    return DataLoader(
        dataset,
        batch_size=case.batch_size,
        shuffle=True,
        num_workers=case.workers,
        persistent_workers=case.workers > 0,
        pin_memory=device.type == "cuda",
        generator=torch.Generator().manual_seed(0),
    )


def _feed_only_loader(case: Case) -> Any:
    """The DALI loader with decoding replaced by a no-op, on the CPU: what the host side of the
    input path (the feed, DALI's file reads, the pipeline's own overhead) can deliver here."""
    import torch

    from .iterator import DaliLoader
    from .source import open_source
    from .spec import LoaderSpec

    checked = open_source(case.root, progress=False)  # the sizes the parameters are drawn from
    spec = LoaderSpec(batch_size=case.batch_size)
    cpu = torch.device("cpu")
    return DaliLoader(checked, spec, cpu, num_threads=case.workers, decode=False)


def measure(case: Case, timeout: float = 1800) -> Result:
    """Run `case` in a fresh subprocess, sampling its process tree's memory meanwhile."""
    command = [sys.executable, "-m", "dali_loader.bench", "--case", json.dumps(asdict(case))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak[0] = max(peak[0], _tree_rss_bytes(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        return Result(case=case, error=(stderr or stdout).strip()[-2000:])
    data = json.loads(stdout.strip().splitlines()[-1])
    result = Result(**{**data, "case": case})
    result.peak_rss_mb = peak[0] / 2**20
    return result


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, from /proc (Linux).

    Shared pages (libraries, shared-memory batches) count once in every process that maps
    them, so the sum overstates multi-process loaders; `_tree_pss_bytes` splits them.
    """
    return sum(_tree_rss(root_pid).values())


def _tree_pss_bytes(root_pid: int) -> int:
    """Proportional set size of a process tree: each shared page split among its users, so the
    sum is the memory the tree really holds. Reading it walks page tables (~15 ms a process):
    done once, after the timed epochs."""
    total = 0
    for pid in _tree_rss(root_pid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
    return total * 1024


def _tree_rss(root_pid: int) -> dict[int, int]:
    """Resident bytes of a process and of each of its descendants: one pass over /proc/*/stat
    (sampled every 0.1 s beside the timed loop, so read once)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * page
    tree, stack = {}, [root_pid]
    while stack:
        pid = stack.pop()
        tree[pid] = rss.get(pid, 0)
        stack += children.get(pid, [])
    return tree


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import PIL
    import torch
    import torchvision

    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pillow": PIL.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        import nvidia.dali

        info["dali"] = nvidia.dali.__version__
    except ImportError:
        info["dali"] = None
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> int:
    """The parent side: every case in turn, then the table, the JSON and the chart."""
    if args.memory_scaling:
        return run_memory_scaling(args)
    from tqdm import tqdm

    from .backends import runnable_backends
    from .synthetic import make_image_folder

    root = Path(args.root) if args.root else Path(args.data_dir) / f"bench-{args.images}"
    if not args.root:
        make_image_folder(root, args.images)
    loaders = args.loaders or [BASELINE, *runnable_backends()]
    workers = args.workers or len(os.sched_getaffinity(0))
    if args.feed_only:
        cases = _feed_only_cases(root, args, workers)
        check_seconds = None
    else:
        # The dataset check runs once per data set and is cached: pay it here, report it
        # apart, so the first-batch times compare loaders, not a one-time scan.
        check_seconds = _timed_check(root, loaders)
        cases = [
            Case(loader, str(root), rotate, args.batch_size, args.epochs, workers)
            for rotate in args.rotate
            for loader in loaders
        ]
    results = []
    for case in tqdm(cases, desc="bench", unit="case"):
        results.append(measure(case))
        tqdm.write(_line(results[-1]))
    for result in results:
        base = next(
            (
                r
                for r in results
                if r.case.loader == BASELINE
                and r.case.rotate_degrees == result.case.rotate_degrees
                and not r.error
            ),
            None,
        )
        if base and not result.error:
            result.ratio_to_baseline = result.images_per_second / base.images_per_second
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(["dali-loader", "bench", *sys.argv[2:]]),
        "check_seconds": check_seconds,
        "results": [asdict(r) for r in results],
    }
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    print(_table(results))
    print(f"wrote {out / 'bench.json'}")
    _chart(results, report["machine"], out / "bench.png")
    return 1 if any(r.error for r in results) else 0


def _feed_only_cases(root: Path, args: argparse.Namespace, workers: int) -> list[Case]:
    """The input path alone over the folder, and over the same images packed (other reads)."""
    from .errors import DaliLoaderError
    from .packing import is_packed, pack

    roots = [str(root)]
    if not is_packed(root):
        packed = Path(args.data_dir) / f"{root.name}-packed"
        try:
            roots.append(str(pack(root, packed, shard_size=256 << 20).parent))
        except DaliLoaderError as error:
            print(f"not measuring packed shards: {error}", file=sys.stderr)
    return [Case(FEED_ONLY, r, 0.0, args.batch_size, args.epochs, workers) for r in roots]


def run_memory_scaling(args: argparse.Namespace) -> int:
    """Peak RSS reading a packed data set and the same set 10 times over: it should stay flat."""
    from tqdm import tqdm

    from .backends import runnable_backends
    from .index import build_index
    from .packing import pack
    from .synthetic import make_image_folder

    folder = make_image_folder(Path(args.data_dir) / f"bench-{args.images}", args.images)
    index = build_index(folder)
    loaders = [x for x in (args.loaders or runnable_backends()) if x != BASELINE]
    workers = args.workers or len(os.sched_getaffinity(0))
    rows: list[dict[str, Any]] = []
    for scale in (1, 10):
        out = Path(args.data_dir) / f"packed-{args.images}x{scale}"
        # Each copy is a distinct sample with its own bytes in the shards: 10x the data.
        pack((index.paths * scale, index.labels * scale), out, shard_size=256 << 20)
        size = sum(f.stat().st_size for f in out.glob("*.tar"))
        for loader in tqdm(loaders, desc=f"memory x{scale}", unit="case"):
            # Both sizes deliver the same number of batches (20 passes over 1x, 2 over 10x), so
            # allocator warm-up cannot pass for growth with the data.
            case = Case(loader, str(out), 0.0, args.batch_size, 20 // scale - 1, workers)
            result = measure(case)
            rows.append(
                {
                    "loader": loader,
                    "scale": scale,
                    "samples": len(index) * scale,
                    "data_mb": size / 2**20,
                    "peak_rss_mb": result.peak_rss_mb,
                    "pss_mb": result.pss_mb,
                    "images_per_second": result.images_per_second,
                    "error": result.error,
                }
            )
    for row in rows:
        base = next(r for r in rows if r["loader"] == row["loader"] and r["scale"] == 1)
        row["rss_vs_1x"] = row["peak_rss_mb"] / base["peak_rss_mb"] if base["peak_rss_mb"] else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": machine(),
        "command": " ".join(["dali-loader", "bench", *sys.argv[2:]]),
        "memory_scaling": rows,
    }
    (out_dir / "memory.json").write_text(json.dumps(report, indent=2))
    print("| loader | data | samples | peak RSS MB | vs 1x | PSS MB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['loader']} | {r['data_mb']:.0f} MB | {r['samples']} | {r['peak_rss_mb']:.0f} "
            f"| {r['rss_vs_1x']:.2f}x | {r['pss_mb']:.0f} |"
        )
    print(f"wrote {out_dir / 'memory.json'}")
    return 1 if any(r["error"] for r in rows) else 0


def _timed_check(root: Path, loaders: list[str]) -> float | None:
    """The check every case would otherwise start with, with each DALI decoder they use, in a
    process of its own: a GPU probe here would hold GPU memory through every case."""
    probes = [None if x == "dali-cpu" else 0 for x in loaders if x in ("dali", "dali-cpu")]
    code = (
        "import sys\n"
        "from dali_loader.check import check_dataset\n"
        "from dali_loader.errors import DaliLoaderError\n"
        "try:\n"
        f"    for device_id in {probes or [None]!r}:\n"
        f"        check_dataset({str(root)!r}, probe_dali={bool(probes)}, device_id=device_id)\n"
        "except DaliLoaderError:\n"
        "    sys.exit(3)\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], check=False)
    if done.returncode != 0:
        return None  # every case will fail and say why
    return time.perf_counter() - start


def _label(case: Case) -> str:
    """The loader's name, and "(packed)" when it reads packed shards."""
    packed = (Path(case.root) / "manifest.json").is_file()
    return f"{case.loader} (packed)" if packed else case.loader


def _line(result: Result) -> str:
    case = result.case
    if result.error:
        return f"{_label(case):12s} rotate={case.rotate_degrees:g}: FAILED\n{result.error}"
    return (
        f"{_label(case):12s} rotate={case.rotate_degrees:<4g} "
        f"{result.images_per_second:8.0f} img/s  first batch {result.first_batch_seconds:5.2f} s"
        f"  loop thread {result.loop_thread_us_per_image:5.1f} us/img"
        f"  peak RSS {result.peak_rss_mb:6.0f} MB  PSS {result.pss_mb:6.0f} MB"
    )


def _table(results: list[Result]) -> str:
    rows = [
        "| loader | rotate | img/s | vs baseline | first batch s | loop thread us/img "
        "| peak RSS MB | PSS MB | GPU MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.error:
            rows.append(f"| {_label(r.case)} | {r.case.rotate_degrees:g} | failed |||||||")
            continue
        ratio = f"{r.ratio_to_baseline:.2f}x" if r.ratio_to_baseline else ""
        gpu = f"{r.peak_gpu_mb:.0f}" if r.peak_gpu_mb is not None else ""
        rows.append(
            f"| {_label(r.case)} | {r.case.rotate_degrees:g} | {r.images_per_second:.0f} "
            f"| {ratio} | {r.first_batch_seconds:.2f} | {r.loop_thread_us_per_image:.1f} "
            f"| {r.peak_rss_mb:.0f} | {r.pss_mb:.0f} | {gpu} |"
        )
    return "\n".join(rows)


def _chart(results: list[Result], info: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no chart: matplotlib is missing; pip install 'dali-loader[bench]'", file=sys.stderr)
        return
    ok = [r for r in results if not r.error]
    if not ok:
        return
    rotations = sorted({r.case.rotate_degrees for r in ok})
    loaders = list(dict.fromkeys(_label(r.case) for r in ok))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(1, len(loaders))
    for k, loader in enumerate(loaders):
        values = [
            next(
                (
                    r.images_per_second
                    for r in ok
                    if _label(r.case) == loader and r.case.rotate_degrees == rot
                ),
                0.0,
            )
            for rot in rotations
        ]
        xs = [i + k * width for i in range(len(rotations))]
        bars = ax.bar(xs, values, width, label=loader)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks([i + width * (len(loaders) - 1) / 2 for i in range(len(rotations))])
    ax.set_xticklabels([f"rotate_degrees={rot:g}" for rot in rotations])
    ax.set_ylabel("images / s (median epoch)")
    where = info["gpu"] or f"{info['cores']} cores, no GPU"
    ax.set_title(f"224px train pipeline: {where}\n{info['cpu']}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="an image folder to measure (default: generate one)")
    parser.add_argument("--images", type=int, default=2000, help="images to generate")
    parser.add_argument(
        "--data-dir", default=os.path.expanduser("~/.cache/dali-loader"), help="where to generate"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs after a warm-up")
    parser.add_argument("--rotate", type=float, nargs="+", default=[0.0, 15.0])
    parser.add_argument(
        "--loaders", nargs="+", help=f"{BASELINE} and backends (default: all available)"
    )
    parser.add_argument("--workers", type=int, help="workers/threads for every loader (cores)")
    parser.add_argument("--out", default="bench-out", help="folder for bench.json and bench.png")
    parser.add_argument(
        "--feed-only",
        action="store_true",
        help="instead: the DALI loader's host-side input path alone, decoding replaced by a "
        "no-op, over the folder and over it packed: what a GPU could at most be fed here",
    )
    parser.add_argument(
        "--memory-scaling",
        action="store_true",
        help="instead: peak RSS over a packed data set at 1x and 10x the size",
    )


if __name__ == "__main__":
    # The subprocess side of `measure`: one case in, one JSON line out.
    case_parser = argparse.ArgumentParser()
    case_parser.add_argument("--case", required=True)
    case = Case(**json.loads(case_parser.parse_args().case))
    outcome = asdict(run_case(case))
    outcome.pop("case")
    print(json.dumps(outcome))
