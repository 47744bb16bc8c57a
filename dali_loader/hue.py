"""ColorJitter's hue, torchvision's (RGB -> HSV, the hue turned, HSV -> RGB), written once for
both backends: the same arithmetic on torch tensors (the torchvision backend) and on DALI graph
nodes.

DALI runs each operation of a graph as an operator with its own output buffer for the whole
batch, so the formula is written in few operations, on the three channels at once:
- the hue in sixths of a turn, from the channel that is largest: 2k + (next - after) / chroma
  for channel k (torchvision's `_rgb_to_hsv`; where two channels tie for the largest, both give
  the same hue, so their mean is taken);
- back to RGB, each channel is min + chroma * clamp(2 - d, 0, 1), d the distance (in sixths,
  around the circle) from the turned hue to the channel's own (0, 2, 4): torchvision's
  `_hsv_to_rgb` (v, p, q, t by sector), without the sectors.
Pixels are on the 0..255 scale; the hue turns by `turns` of a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# next channel minus the one after it, for each channel: (g - b, b - r, r - g)
_NEXT_MINUS_AFTER = ((0.0, 1.0, -1.0), (-1.0, 0.0, 1.0), (1.0, -1.0, 0.0))


@dataclass(frozen=True)
class Ops:
    """What a backend gives the formula, its channel axis hidden."""

    channel_max: Callable[[Any], Any]  # keeping the channel axis, of size 1
    channel_min: Callable[[Any], Any]
    channel_sum: Callable[[Any], Any]
    mix: Callable[[Any, tuple[tuple[float, ...], ...]], Any]  # each channel a sum of all
    per_channel: Callable[[tuple[float, float, float]], Any]  # a constant, one per channel
    floor: Callable[[Any], Any]
    abs: Callable[[Any], Any]
    clamp: Callable[[Any, float, float], Any]
    as_float: Callable[[Any], Any]  # a comparison's result as 0.0 / 1.0


def turn_hue(x: Any, turns: Any, ops: Ops) -> Any:
    """The three channels of `x` with the hue turned by `turns` (saturation and value kept)."""
    largest, smallest = ops.channel_max(x), ops.channel_min(x)
    chroma = largest - smallest
    # a gray pixel has no hue (it stays gray): divide by 1 there, as torchvision does
    sixths = ops.mix(x, _NEXT_MINUS_AFTER) / (chroma + ops.as_float(chroma == 0.0))
    sixths = _modulo_6(sixths + ops.per_channel((6.0, 8.0, 10.0)), ops)
    is_largest = ops.as_float(x == largest)
    hue = ops.channel_sum(is_largest * sixths) / ops.channel_sum(is_largest)
    # around the circle, from the turned hue to each channel's: in [-3, 3)
    distance = _modulo_6(hue + turns * 6.0 - ops.per_channel((0.0, 2.0, 4.0)) + 9.0, ops) - 3.0
    return smallest + chroma * ops.clamp(2.0 - ops.abs(distance), 0.0, 1.0)


def _modulo_6(x: Any, ops: Ops) -> Any:
    """x mod 6, for x >= 0."""
    return x - 6.0 * ops.floor(x / 6.0)
