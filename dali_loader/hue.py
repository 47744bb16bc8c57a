"""ColorJitter's hue, as torchvision's tensor kernel computes it (RGB -> HSV, the hue turned,
HSV -> RGB), written once for both backends: the same arithmetic on torch tensors (the
torchvision backend) and on DALI graph nodes (fused into DALI's arithmetic kernels).

Only +, -, *, / and comparisons are used, with the few functions a backend gives in `Ops`:
no branch, no gather. Pixels are on the 0..255 scale; the hue turns by `turns` of a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ops:
    maximum: Callable[[Any, Any], Any]
    minimum: Callable[[Any, Any], Any]
    floor: Callable[[Any], Any]
    as_float: Callable[[Any], Any]  # a comparison's result as 0.0 / 1.0


def turn_hue(r: Any, g: Any, b: Any, turns: Any, ops: Ops) -> tuple[Any, Any, Any]:
    """(r, g, b) with the hue turned: torchvision's `_rgb_to_hsv`, the turn, `_hsv_to_rgb`."""
    v = ops.maximum(r, ops.maximum(g, b))
    low = ops.minimum(r, ops.minimum(g, b))
    gray = ops.as_float(v == low)
    spread = v - low
    s = spread / (v + gray)  # 0 where gray (torchvision divides by 1 there)
    rc, gc, bc = ((v - c) / (spread + gray) for c in (r, g, b))
    is_r = ops.as_float(v == r)
    is_g = ops.as_float(v == g) * (1.0 - is_r)
    is_b = (1.0 - is_r) * (1.0 - ops.as_float(v == g))
    sixths = (bc - gc) * is_r + (rc - bc + 2.0) * is_g + (gc - rc + 4.0) * is_b
    h = sixths / 6.0 + 1.0 + turns
    h = h - ops.floor(h)
    h6 = h * 6.0
    sector = ops.floor(h6)
    f = h6 - sector
    sector = sector - 6.0 * ops.floor(sector / 6.0)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s + s * f)
    at = [ops.as_float(sector == float(k)) for k in range(6)]
    red = v * (at[0] + at[5]) + q * at[1] + p * (at[2] + at[3]) + t * at[4]
    green = t * at[0] + v * (at[1] + at[2]) + q * at[3] + p * (at[4] + at[5])
    blue = p * (at[0] + at[1]) + t * at[2] + v * (at[3] + at[4]) + q * at[5]
    return red, green, blue
