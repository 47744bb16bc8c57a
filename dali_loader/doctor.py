"""`dali-loader doctor`: what this machine offers the loader, and which backend "auto" picks.

Each finding is read off the machine (torch, DALI, nvidia-smi, /dev/shm); where one is inferred
instead (the hardware JPEG decoder, from the GPU's model), the line says so.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass

from .backends import default_num_threads, local_world_size, pick_auto

# GPUs with NVJPG, the hardware JPEG decoder nvJPEG uses for baseline JPEGs (NVIDIA's docs:
# A100, A30, H100 and their variants, Hopper and Blackwell data-center parts).
_HW_DECODER_MODELS = ("A100", "A800", "A30", "H100", "H800", "H200", "H20", "GH200", "B200", "B100")


@dataclass(frozen=True)
class Finding:
    topic: str
    value: str
    problem: bool = False  # something that stops a backend, or costs it


def diagnose(batch_size: int = 256, image_size: int = 224) -> list[Finding]:
    """Every finding, in the order they are printed."""
    import torch

    found = [
        Finding("python", f"{platform.python_version()} on {platform.machine()}"),
        Finding("torch", f"{torch.__version__}, built for CUDA {torch.version.cuda or 'none'}"),
        Finding("cores", _cores()),
    ]
    found += _gpus()
    found += _dali()
    found.append(_shm(batch_size, image_size))
    backend, why = pick_auto()
    found.append(Finding("backend='auto'", f"{backend}: {why}"))
    return found


def _cores() -> str:
    usable = len(os.sched_getaffinity(0))
    ranks = local_world_size()
    threads = default_num_threads()
    return (
        f"{usable} usable; {ranks} rank(s) on this machine, so {threads} "
        f"thread{'s' if threads > 1 else ''} (or workers) per loader by default"
    )


def _gpus() -> list[Finding]:
    import torch

    smi = _nvidia_smi()
    if not torch.cuda.is_available():
        return [Finding("GPU", f"none visible to torch{'; ' + smi if smi else ''}")]
    found = [Finding("driver", smi or "nvidia-smi not found: driver version unknown")]
    for k in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(k)
        hardware = any(model in props.name for model in _HW_DECODER_MODELS)
        found.append(
            Finding(
                f"GPU {k}",
                f"{props.name}, compute capability {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.0f} GiB; hardware JPEG decoder: "
                f"{'yes' if hardware else 'not on this model'} (by model; `nvidia-smi dmon` "
                "shows it at work in the jpg column)",
            )
        )
    return found


def _nvidia_smi() -> str:
    """The driver version and the CUDA version it supports, from nvidia-smi's header."""
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        header = subprocess.run(
            ["nvidia-smi"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    driver = re.search(r"Driver Version:\s*([\d.]+)", header)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    if not driver:
        return ""
    return f"driver {driver[1]}, supports CUDA up to {cuda[1] if cuda else '?'}"


def _dali() -> list[Finding]:
    from .backends import dali_installed

    if not dali_installed():
        return [
            Finding(
                "DALI",
                "not installed: pip install 'dali-loader[cuda12]' (or [cuda13])",
                problem=True,
            )
        ]
    wheels = [
        f"{dist.metadata['Name']} {dist.version}"
        for dist in importlib.metadata.distributions()
        if (dist.metadata["Name"] or "").startswith(("nvidia-dali", "nvidia-nvimgcodec"))
    ]
    found = [Finding("DALI", ", ".join(sorted(wheels)))]
    try:
        from nvidia import nvimgcodec

        found.append(Finding("nvImageCodec", str(getattr(nvimgcodec, "__version__", "present"))))
    except ImportError:
        found.append(Finding("nvImageCodec", "not importable: DALI's image decoders need it", True))
    return found


def _shm(batch_size: int, image_size: int) -> Finding:
    try:
        usage = shutil.disk_usage("/dev/shm")
    except OSError:
        return Finding("/dev/shm", "missing: the torchvision backend's workers need it", True)
    import torch

    from fallback.buffers import slot_count

    workers, ranks = default_num_threads(), local_world_size()
    uint8 = ranks * slot_count(workers) * batch_size * 3 * image_size * image_size
    # float32 batches on the CPU, handed out as they are; uint8 for a GPU, normalized there
    needed = uint8 if torch.cuda.is_available() else 4 * uint8
    setup = (
        f"{usage.total / 2**30:.1f} GiB, {usage.free / 2**30:.1f} GiB free; the torchvision "
        f"backend with {workers} workers, batch {batch_size} at {image_size} px needs "
        f"{needed / 2**30:.2f} GiB{f' for its {ranks} ranks' if ranks > 1 else ''}"
    )
    more = f"give it more (docker run --shm-size={needed / 2**30 + 1:.0f}g)"
    if usage.free >= needed:
        return Finding("/dev/shm", setup)
    if usage.free >= uint8:  # enough for uint8 slots: works, with the loop normalizing
        return Finding(
            "/dev/shm",
            f"{setup} for float32 batches; with less, its workers hand over uint8 "
            f"({uint8 / 2**30:.2f} GiB) and the training thread normalizes them (slower): {more}",
        )
    return Finding("/dev/shm", f"{setup}; {more}", problem=True)


def render(findings: list[Finding]) -> str:
    width = max(len(f.topic) for f in findings)
    return "\n".join(f"{'!' if f.problem else ' '} {f.topic:<{width}}  {f.value}" for f in findings)
