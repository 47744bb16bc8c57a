"""The one place that draws every sample's augmentation: ranges, distributions, determinism."""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop

from dali_loader import params
from dali_loader.params import draw
from dali_loader.spec import LoaderSpec

SIZES = np.array([[400, 300]] * 4000)  # (width, height)
SAMPLES = np.arange(4000)


def test_train_boxes_follow_random_resized_crop() -> None:
    spec = LoaderSpec(scale=(0.25, 0.5), ratio=(0.5, 2.0))
    boxes = draw(spec, 0, SAMPLES, SIZES).boxes.astype(np.float64)
    left, top, right, bottom = boxes.T
    assert (left >= 0).all() and (top >= 0).all() and (right <= 400).all() and (bottom <= 300).all()
    assert ((left == np.floor(left)) & (right - left >= 1) & (bottom - top >= 1)).all()
    area = (right - left) * (bottom - top) / (400 * 300)
    assert area.min() >= 0.24 and area.max() <= 0.51
    ratio = (right - left) / (bottom - top)
    assert ratio.min() >= 0.49 and ratio.max() <= 2.05


def test_drawn_like_torchvisions_get_params() -> None:
    """Quantiles of area, aspect ratio and position against torchvision's own draws: a wrong
    range, log scale or offset moves them far beyond the sampling noise of 4,000 draws."""
    spec = LoaderSpec(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
    ours = draw(spec, 0, SAMPLES, SIZES).boxes.astype(np.float64)
    torch.manual_seed(0)
    image = torch.empty(3, 300, 400)
    theirs = []
    for _ in range(4000):
        top, left, h, w = RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        theirs.append([left, top, left + w, top + h])
    reference = np.array(theirs, dtype=np.float64)

    def features(boxes: np.ndarray) -> np.ndarray:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        center_x = (boxes[:, 0] + boxes[:, 2]) / 2 / 400
        return np.stack([w * h / 120000, np.log(w / h), center_x], axis=1)

    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    got = np.quantile(features(ours), quantiles, axis=0)
    want = np.quantile(features(reference), quantiles, axis=0)
    assert np.abs(got - want).max() < 0.04, (got, want)


def _angles(matrices: np.ndarray) -> np.ndarray:
    """The turn (degrees, counter-clockwise) in output-to-canvas maps without a flip."""
    return np.degrees(np.arctan2(-matrices[:, 1, 0], matrices[:, 0, 0]))


def test_flips_and_angles_have_their_probability_and_range() -> None:
    for flip_prob in (0.3, 1.0):
        flips = draw(LoaderSpec(flip_prob=flip_prob), 0, SAMPLES, SIZES).flips
        assert abs(flips.mean() - flip_prob) < 0.03
    assert "flips" not in draw(LoaderSpec(flip_prob=0.0), 0, SAMPLES, SIZES).arrays
    spec = LoaderSpec(flip_prob=0.0, rotate_degrees=15.0)
    angles = _angles(draw(spec, 0, SAMPLES, SIZES).matrices.astype(np.float64))
    assert -15.01 <= angles.min() < -14 and 14 < angles.max() <= 15.01
    assert abs(angles.mean()) < 0.5


def test_a_samples_draw_depends_on_seed_epoch_and_index_alone() -> None:
    spec = LoaderSpec(rotate_degrees=10.0)
    sizes = np.array([[500, 375], [375, 500], [640, 480]])
    together = draw(spec, 3, np.array([7, 11, 2]), sizes)
    alone = draw(spec, 3, np.array([11]), sizes[1:2])
    assert (together.boxes[1] == alone.boxes[0]).all()
    assert (together.matrices[1] == alone.matrices[0]).all()
    other_epoch = draw(spec, 4, np.array([7, 11, 2]), sizes)
    other_seed = draw(LoaderSpec(rotate_degrees=10.0, seed=1), 3, np.array([7, 11, 2]), sizes)
    for other in (other_epoch, other_seed):
        assert not np.array_equal(together.boxes, other.boxes)
        assert not np.array_equal(together.matrices, other.matrices)


def test_eval_box_is_torchvisions_resize_then_center_crop() -> None:
    """Resize(256): 500x375 -> 341x256 (torchvision truncates the longer side); CenterCrop(224):
    left round(58.5) = 58 (half to even), top 16; the box is that window in source pixels."""
    spec = LoaderSpec(train=False, image_size=(224, 224))
    box = draw(spec, 0, np.array([0]), np.array([[500, 375]])).boxes[0].astype(np.float64)
    sx, sy = 500 / 341, 375 / 256
    assert np.allclose(box, [58 * sx, 16 * sy, (58 + 224) * sx, (16 + 224) * sy], atol=1e-4)


def _torchvision_box(u: np.ndarray, width: int, height: int, spec: LoaderSpec) -> list[float]:
    """torchvision's own `RandomResizedCrop.get_params`, its random calls answered with our
    draws (area and ratio and top and left per try): the box it then computes."""
    calls = {"uniform": 0, "randint": 0}

    class Uniform:
        def uniform_(self, low: float, high: float) -> torch.Tensor:
            k = calls["uniform"]
            calls["uniform"] += 1
            column = (params._AREA if k % 2 == 0 else params._RATIO) + k // 2
            return torch.tensor([low + (high - low) * float(u[column])], dtype=torch.float64)

    def randint(low: int, high: int, size: tuple[int, ...]) -> torch.Tensor:
        k = calls["randint"]
        calls["randint"] += 1
        try_number = calls["uniform"] // 2 - 1
        column = (params._TOP if k == 0 else params._LEFT) + try_number
        return torch.tensor([math.floor(float(u[column]) * high)])

    image = torch.empty(3, height, width)
    with mock.patch("torch.empty", lambda *a, **k: Uniform()), mock.patch("torch.randint", randint):
        top, left, h, w = RandomResizedCrop.get_params(image, list(spec.scale), list(spec.ratio))
    return [left, top, left + w, top + h]


def test_boxes_are_torchvisions_own_for_the_same_draws() -> None:
    """Exactly the box torchvision's code computes from the same uniform draws: rounding, the
    first window that fits, the position ranges and the fallback (sizes that fit no window)."""
    rng = np.random.default_rng(1)
    extreme = [[1000, 10], [10, 1000], [20000, 4000], [3, 1], [1, 1]]
    sizes = np.concatenate([rng.integers(1, 600, (200, 2)), extreme])
    samples = np.arange(len(sizes))
    settings = [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.25, 0.5), (0.5, 2.0)), ((1.0, 1.0), (1.0, 1.0))]
    fallbacks = 0
    for scale, ratio in settings:
        spec = LoaderSpec(scale=scale, ratio=ratio)
        ours = draw(spec, 5, samples, sizes).boxes.astype(np.float64)
        u = params.uniforms(spec.seed, 5, samples, 4 * params._TRIES, stream=1)  # the first op
        for row, (width, height) in enumerate(sizes.tolist()):
            assert ours[row].tolist() == _torchvision_box(u[row], width, height, spec), (
                scale,
                ratio,
                (width, height),
            )
        fallbacks += sum(width / height > 10 or height / width > 10 for width, height in extreme)
    assert fallbacks  # the fallback branch was among them
