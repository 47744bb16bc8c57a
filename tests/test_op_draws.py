"""What `transform=`'s random ops draw, against what torchvision's own `get_params` draws.

Each test draws a few thousand samples both ways (fixed seeds, so every run is the same) and
compares the distributions: a continuous draw must stay inside its range, reach both ends, and be
within a Kolmogorov-Smirnov distance of torchvision's that 4,000 draws leave only once in a
thousand times; an integer draw must take exactly torchvision's values, each about as often. Each
test also shows that the same check refuses draws whose range is 10% off, so none of them passes
for any implementation.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torchvision import transforms as T
from torchvision.transforms import v2 as V2

from dali_loader import params
from dali_loader.ops import Affine, ColorJitter
from dali_loader.params import BatchParams
from dali_loader.spec import LoaderSpec
from dali_loader.transforms import compile_transform

N = 4000
# Two samples of 4,000 are this far apart (largest gap of their CDFs) once in a thousand times.
KS_BOUND = 1.95 * math.sqrt(2 / N)
# The largest gap between the two frequencies of any one integer value (4,000 draws each): about
# 4.5 standard deviations for a value drawn one time in nine.
FREQUENCY_BOUND = 0.03


def spec_of(steps: list[Any], width: int, height: int) -> LoaderSpec:
    compose = T.Compose([*steps, T.ToTensor()])
    spec = LoaderSpec(batch_size=8, ops=compile_transform(compose).ops)
    return spec.with_source_sizes(np.array([[width, height]]), ["x"])


def drawn(steps: list[Any], width: int, height: int, count: int = N) -> BatchParams:
    """`count` samples' draws for `Compose([*steps, ToTensor()])` on a width x height image."""
    sizes = np.repeat(np.array([[width, height]]), count, axis=0)
    return params.draw(spec_of(steps, width, height), 0, np.arange(count), sizes)


def torchvisions(get_params: Callable[[], Any], count: int = N) -> list[Any]:
    torch.manual_seed(0)
    return [get_params() for _ in range(count)]


def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest gap between the empirical CDFs of `a` and `b` (ties counted on both)."""
    values = np.union1d(a, b)
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def like_uniform(ours: np.ndarray, theirs: np.ndarray, low: float, high: float) -> bool:
    """`ours` is drawn as `theirs`, uniform on [low, high]: inside it, near both of its ends
    (4,000 draws come within 1/4,000 of them), and with the same shape."""
    span, slack = high - low, 1e-6 * max(1.0, abs(low), abs(high))  # float32 draws
    inside = low - slack <= ours.min() and ours.max() <= high + slack
    ends = ours.min() < low + 0.005 * span and ours.max() > high - 0.005 * span
    return bool(inside and ends and ks_distance(ours, theirs) < KS_BOUND)


def assert_uniform_like_torchvisions(
    ours: np.ndarray, theirs: np.ndarray, low: float, high: float
) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert like_uniform(theirs, theirs[::-1], low, high)  # the range given is torchvision's
    assert like_uniform(ours, theirs, low, high), (
        ours.min(),
        ours.max(),
        ks_distance(ours, theirs),
    )
    # the check catches a range 10% too long, 10% too short, or shifted by 10%
    span = high - low
    for wrong in (low + (ours - low) * 1.1, low + (ours - low) * 0.9, ours + 0.1 * span):
        assert not like_uniform(wrong, theirs, low, high)


def like_integers(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """The same values, each about as often."""
    if set(np.unique(ours).tolist()) != set(np.unique(theirs).tolist()):
        return False
    values = np.unique(theirs)
    ours_freq = (ours[:, None] == values).mean(axis=0)
    theirs_freq = (theirs[:, None] == values).mean(axis=0)
    return bool(np.abs(ours_freq - theirs_freq).max() < FREQUENCY_BOUND)


def assert_integers_like_torchvisions(ours: np.ndarray, theirs: np.ndarray) -> None:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert (ours == np.round(ours)).all()
    assert like_integers(ours, theirs), (np.unique(ours), np.unique(theirs))
    # the check catches a range one value longer or shorter (10% of a range of ten values,
    # less of the longer ones), or shifted by one
    top = ours.max()
    longer = ours + (ours == top) * (np.arange(len(ours)) % 2)
    for wrong in (longer, np.minimum(ours, top - 1), ours + 1):
        assert not like_integers(wrong, theirs)


# --- RandomCrop ---------------------------------------------------------------------------------

CROPS: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {
    # (width, height), RandomCrop's keywords
    "no-padding": ((64, 40), {"size": (20, 30)}),
    "cifar": ((32, 32), {"size": 32, "padding": 4}),
    "padding-2": ((40, 30), {"size": (30, 40), "padding": (2, 5)}),
    "padding-4-pad-if-needed": (
        (30, 26),
        {"size": 40, "padding": (1, 2, 3, 4), "pad_if_needed": True},
    ),
    "pad-if-needed-height": ((50, 26), {"size": (30, 44), "pad_if_needed": True}),
}


def torchvision_crop_offsets(step: Any, width: int, height: int) -> np.ndarray:
    """RandomCrop.forward's window, drawn by its get_params on the image it pads: (x, y) of the
    window's corner in the unpadded image's pixels, (N, 2)."""
    image = torch.empty(1, height, width)
    left = top = 0
    if step.padding is not None:
        image = T.functional.pad(image, step.padding)
        sides = list(step.padding) if isinstance(step.padding, (list, tuple)) else [step.padding]
        left, top = sides[0], sides[1 if len(sides) > 1 else 0]
    if step.pad_if_needed and image.shape[2] < step.size[1]:
        left += step.size[1] - image.shape[2]
        image = T.functional.pad(image, [step.size[1] - image.shape[2], 0])
    if step.pad_if_needed and image.shape[1] < step.size[0]:
        top += step.size[0] - image.shape[1]
        image = T.functional.pad(image, [0, step.size[0] - image.shape[1]])
    windows = torchvisions(lambda: T.RandomCrop.get_params(image, step.size))
    return np.array([[j - left, i - top] for i, j, _, _ in windows], dtype=np.float64)


def crop_offsets(drawn_params: BatchParams) -> np.ndarray:
    """(x, y) of each drawn window's corner in the source's pixels: the source box's corner less
    where it lands on the canvas (the padding above and left of it)."""
    boxes = drawn_params.boxes.astype(np.float64)
    inner = drawn_params.arrays.get("inner", np.zeros_like(boxes)).astype(np.float64)
    return np.stack([boxes[:, 0] - inner[:, 1], boxes[:, 1] - inner[:, 0]], axis=1)


@pytest.mark.parametrize("api", ["v1", "v2"])
@pytest.mark.parametrize("name", list(CROPS))
def test_random_crop_windows_are_drawn_as_torchvisions(name: str, api: str) -> None:
    (width, height), keywords = CROPS[name]
    step = T.RandomCrop(**keywords)
    given = step if api == "v1" else V2.RandomCrop(**keywords)
    ours = crop_offsets(drawn([given], width, height))
    theirs = torchvision_crop_offsets(step, width, height)
    for axis in (0, 1):
        assert_integers_like_torchvisions(ours[:, axis], theirs[:, axis])
    assert abs(np.corrcoef(ours.T)[0, 1]) < 0.06  # x and y drawn apart


def test_a_random_crop_after_a_turn_shifts_the_window_as_torchvisions() -> None:
    """A crop after a turn is part of the warp: its window is the matrix's translation."""
    steps = [T.Resize((40, 48)), T.RandomRotation((0, 0)), T.RandomCrop(32, padding=2)]
    matrices = drawn(steps, 100, 100).matrices.astype(np.float64)
    assert np.allclose(matrices[:, :, :2], np.eye(2), atol=1e-6)  # no turn: a shift alone
    theirs = torchvision_crop_offsets(steps[2], 48, 40)
    for axis in (0, 1):
        assert_integers_like_torchvisions(np.round(matrices[:, axis, 2]), theirs[:, axis])


# --- RandomAffine and RandomRotation ---------------------------------------------------------


def test_affine_draws_are_torchvisions() -> None:
    width, height = 53, 37  # translations of 5.3 and 5.55 pixels at most: rounding shows
    step = T.RandomAffine(
        degrees=(-10, 25), translate=(0.1, 0.15), scale=(0.7, 1.2), shear=(-5, 10, 2, 8)
    )
    (op,) = compile_transform(T.Compose([step, T.ToTensor()])).ops
    assert isinstance(op, Affine)
    ours = params.affine_draws(op, params.uniforms(0, 0, np.arange(N), 6), width, height)
    theirs = np.array(
        [
            [angle, tx, ty, scale, sx, sy]
            for angle, (tx, ty), scale, (sx, sy) in torchvisions(
                lambda: T.RandomAffine.get_params(
                    step.degrees, step.translate, step.scale, step.shear, [width, height]
                )
            )
        ]
    )
    assert_uniform_like_torchvisions(ours.angle, theirs[:, 0], -10, 25)
    assert_integers_like_torchvisions(ours.translate_x, theirs[:, 1])
    assert_integers_like_torchvisions(ours.translate_y, theirs[:, 2])
    assert_uniform_like_torchvisions(ours.scale, theirs[:, 3], 0.7, 1.2)
    assert_uniform_like_torchvisions(ours.shear_x, theirs[:, 4], -5, 10)
    assert_uniform_like_torchvisions(ours.shear_y, theirs[:, 5], 2, 8)
    # rounded as Python rounds: the end values are drawn less often than the others (5.3 -> 5
    # from [4.5, 5.3] only); a floor or a truncation would move whole values
    assert set(ours.translate_x.tolist()) == set(range(-5, 6))
    draws = [ours.angle, ours.translate_x, ours.translate_y, ours.scale, ours.shear_x]
    correlations = np.corrcoef(np.stack([*draws, ours.shear_y]))
    assert np.abs(correlations - np.eye(6)).max() < 0.06  # each from its own number


def test_rotation_angles_in_the_drawn_matrices_are_torchvisions() -> None:
    """RandomRotation turns counter-clockwise: the matrices the backends get turn the output
    back by the angle torchvision draws (an asymmetric range shows the sign)."""
    matrices = drawn([T.RandomRotation((10, 40))], 53, 37).matrices.astype(np.float64)
    # the output-to-source map of a turn by a (counter-clockwise): [[cos a, -sin a], [sin a,
    # cos a]] in pixel coordinates (y down), as torchvision's _get_inverse_affine_matrix
    ours = np.degrees(np.arctan2(-matrices[:, 0, 1], matrices[:, 0, 0]))
    assert np.allclose(matrices[:, 0, 0], matrices[:, 1, 1], atol=1e-6)
    theirs = np.array(torchvisions(lambda: T.RandomRotation.get_params([10.0, 40.0])))
    assert_uniform_like_torchvisions(ours, theirs, 10, 40)


# --- ColorJitter ------------------------------------------------------------------------------

PROPERTIES = ("brightness", "contrast", "saturation", "hue")  # torchvision's fn_idx numbers


def jitter_steps(drawn_params: BatchParams, op: ColorJitter) -> list[list[tuple[int, float]]]:
    """Per sample, the (property, factor) of each step, in the order applied, read back from
    what the backends are given: a hue step turns (`h`), contrast blends toward the image's mean
    gray (`b`), saturation toward the pixel's gray (`m` with the gray's weights off its
    diagonal), brightness only scales (`m`)."""
    arrays = drawn_params.arrays
    enabled = sum(getattr(op, name) is not None for name in PROPERTIES)
    samples: list[list[tuple[int, float]]] = [[] for _ in range(len(arrays["c0.m0"]))]
    for j in range(enabled):
        m = arrays[f"c0.m{j}"].astype(np.float64)
        zeros = np.zeros((len(m), 1))
        h = arrays.get(f"c0.h{j}", zeros)[:, 0].astype(np.float64)
        b = arrays.get(f"c0.b{j}", zeros)[:, 0].astype(np.float64)
        for row, steps in enumerate(samples):
            factor = m[row, 0, 0]
            scaling = np.allclose(m[row], factor * np.eye(3), atol=1e-7)
            if h[row] != 0:
                assert np.allclose(m[row], np.eye(3)) and b[row] == 0
                steps.append((3, h[row]))
            elif b[row] != 0:
                assert scaling and math.isclose(b[row], 1 - factor, abs_tol=1e-6)
                steps.append((1, factor))
            elif scaling:
                steps.append((0, factor))
            else:
                factor = 1 - m[row, 0, 1] / params.GRAY[1]
                blend = factor * np.eye(3) + (1 - factor) * params.GRAY[None, :]
                assert np.allclose(m[row], blend, atol=1e-6), m[row]
                steps.append((2, factor))
    return samples


CHI2_23_AT_0_001 = 49.73  # 23 degrees of freedom (24 orders), one in a thousand


def chi2_uniform(counts: Counter[Any], categories: int) -> float:
    total = sum(counts.values())
    expected = total / categories
    observed = [*counts.values(), *[0] * (categories - len(counts))]
    return sum((c - expected) ** 2 / expected for c in observed)


def test_color_jitter_factors_and_order_are_torchvisions() -> None:
    step = T.ColorJitter(
        brightness=0.4, contrast=(0.5, 0.9), saturation=(1.1, 1.8), hue=(-0.05, 0.2)
    )
    (op,) = compile_transform(T.Compose([step, T.ToTensor()])).ops
    assert isinstance(op, ColorJitter)
    samples = jitter_steps(drawn([step], 40, 30), op)
    theirs = torchvisions(
        lambda: T.ColorJitter.get_params(step.brightness, step.contrast, step.saturation, step.hue)
    )
    ranges = [(0.6, 1.4), (0.5, 0.9), (1.1, 1.8), (-0.05, 0.2)]
    for k, (low, high) in enumerate(ranges):
        ours = np.array([f for steps in samples for prop, f in steps if prop == k])
        assert len(ours) == N  # each property once per sample
        reference = np.array([draw[1 + k] for draw in theirs])
        assert_uniform_like_torchvisions(ours, reference, low, high)
    orders = Counter(tuple(prop for prop, _ in steps) for steps in samples)
    assert set(orders) <= set(itertools.permutations(range(4)))
    assert chi2_uniform(orders, 24) < CHI2_23_AT_0_001, orders
    their_orders = Counter(tuple(draw[0].tolist()) for draw in theirs)
    assert chi2_uniform(their_orders, 24) < CHI2_23_AT_0_001  # the same test passes theirs
    # and refuses orders that leave one of the 24 out
    assert chi2_uniform(Counter({o: c for o, c in orders.items() if o != (0, 1, 2, 3)}), 24) > (
        CHI2_23_AT_0_001
    )
    # each property at each place a quarter of the time (3.5 standard deviations)
    places = np.array([[steps[i][0] for i in range(4)] for steps in samples])
    shares = (places[:, :, None] == np.arange(4)).mean(axis=0)
    assert np.abs(shares - 0.25).max() < 3.5 * math.sqrt(0.25 * 0.75 / N), shares
    # the factors do not depend on the order (a factor drawn with the permutation's numbers)
    brightness = np.array([dict(s)[0] for s in samples])
    first = np.array([s[0][0] == 0 for s in samples])
    bound = 1.95 * math.sqrt(1 / first.sum() + 1 / (~first).sum())
    assert ks_distance(brightness[first], brightness[~first]) < bound


def test_two_jitter_properties_come_in_either_order_half_the_time() -> None:
    step = T.ColorJitter(brightness=(1.2, 1.2), saturation=(0.5, 0.5))
    (op,) = compile_transform(T.Compose([step, T.ToTensor()])).ops
    assert isinstance(op, ColorJitter)
    samples = jitter_steps(drawn([step], 40, 30), op)
    for steps in samples:
        assert sorted(p for p, _ in steps) == [0, 2]
        assert np.allclose([f for _, f in sorted(steps)], [1.2, 0.5])
    brightness_first = np.mean([steps[0][0] == 0 for steps in samples])
    assert abs(brightness_first - 0.5) < 0.025, brightness_first


# --- GaussianBlur -----------------------------------------------------------------------------


def test_blur_sigmas_are_torchvisions() -> None:
    ours = drawn([T.GaussianBlur(5, sigma=(0.3, 2.5))], 40, 30).arrays["c0.sigma"][:, 0]
    theirs = np.array(torchvisions(lambda: T.GaussianBlur.get_params(0.3, 2.5)))
    assert_uniform_like_torchvisions(ours, theirs, 0.3, 2.5)


# --- Probabilities: flips, RandomGrayscale, RandomApply ---------------------------------------

N_COIN = 40_000  # cheap draws: a rate 10% off p is 6.6 or more standard deviations away


def assert_rate(on: np.ndarray, p: float) -> None:
    """`on` is true with probability p: within 3.5 standard deviations of 40,000 draws, and
    not within them of a probability 10% off."""
    rate, bound = float(np.mean(on)), 3.5 * math.sqrt(p * (1 - p) / len(on))
    assert abs(rate - p) < bound, (rate, p)
    assert abs(rate - 1.1 * p) > bound and abs(rate - 0.9 * p) > bound, (rate, p)


def is_gray(matrices: np.ndarray) -> np.ndarray:
    return np.asarray(np.isclose(matrices, params.GRAY[None, None, :], atol=1e-6).all(axis=(1, 2)))


def is_identity(matrices: np.ndarray) -> np.ndarray:
    return np.asarray(np.isclose(matrices, np.eye(3), atol=1e-7).all(axis=(1, 2)))


def test_flip_probabilities_are_their_p() -> None:
    flips = drawn([T.RandomHorizontalFlip(0.3)], 40, 30, N_COIN).flips
    assert set(np.unique(flips).tolist()) == {0, 1}
    assert_rate(flips == 1, 0.3)
    both = drawn([T.RandomHorizontalFlip(0.3), T.RandomVerticalFlip(0.7)], 40, 30, N_COIN)
    matrices = both.matrices.astype(np.float64)
    horizontal, vertical = matrices[:, 0, 0] < 0, matrices[:, 1, 1] < 0
    assert_rate(horizontal, 0.3)
    assert_rate(vertical, 0.7)
    assert_rate(horizontal & vertical, 0.21)  # drawn apart


def test_random_grayscale_probability_is_its_p() -> None:
    matrices = drawn([T.RandomGrayscale(0.2)], 40, 30, N_COIN).arrays["c0.m0"]
    gray, identity = is_gray(matrices), is_identity(matrices)
    assert (gray | identity).all()
    assert_rate(gray, 0.2)


def test_random_apply_gates_its_ops_together_with_its_p() -> None:
    steps = [
        T.RandomApply([T.ColorJitter(brightness=(1.3, 1.3)), T.GaussianBlur(3, (1.0, 2.0))], p=0.4),
        T.RandomApply([T.RandomGrayscale(1.0)], p=0.25),
    ]
    arrays = drawn(steps, 40, 30, N_COIN).arrays
    jitter = ~is_identity(arrays["c0.m0"])
    blur = arrays["c1.sigma"][:, 0] >= 1.0  # off: a sigma far below a pixel
    assert np.array_equal(jitter, blur)  # one gate for both
    assert_rate(jitter, 0.4)
    gray = is_gray(arrays["c2.m0"])
    assert_rate(gray, 0.25)
    assert_rate(jitter & gray, 0.1)  # the two gates drawn apart


def test_random_apply_of_a_flip_multiplies_the_probabilities() -> None:
    flips = drawn([T.RandomApply([T.RandomHorizontalFlip(0.5)], p=0.6)], 40, 30, N_COIN).flips
    assert_rate(flips == 1, 0.3)
