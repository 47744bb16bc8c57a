"""The torchvision backend: dali_loader's contract on any machine, without DALI or CUDA.

It builds on dali_loader's spec, index and sampler, and never imports DALI.
"""

from .loader import TorchvisionLoader

__all__ = ["TorchvisionLoader"]
