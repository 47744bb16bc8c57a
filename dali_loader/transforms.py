"""A torchvision transform pipeline, read as the loader's recipe it spells: `transform=`.

A training script keeps its Compose (torchvision's v1 or v2 classes) when the Compose is the
recipe the loader runs on every backend:

    train: RandomResizedCrop(size, scale, ratio), then RandomHorizontalFlip(p) and
           RandomRotation(degrees) (either, both, in either order), to float, Normalize(mean, std)
    eval:  Resize(s), CenterCrop(c) with s = int(c / 0.875) (256 for 224), to float, Normalize
    to float: ToTensor(), or PILToTensor() + ConvertImageDtype(float), or ToImage() +
              ToDtype(float, scale=True)

Normalize may be left out (pixels on the 0..1 scale). Anything else is refused when the loader is
created, naming the transform and listing what is taken: each backend compiles the recipe, it
does not run the user's objects. Rotation is bilinear on every backend, whatever the
interpolation asked (torchvision's default is nearest).
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .spec import EVAL_CROP_FRACTION

SUPPORTED = (
    "RandomResizedCrop, RandomHorizontalFlip, RandomRotation (train); Resize + CenterCrop "
    "(eval); ToTensor, PILToTensor + ConvertImageDtype, ToImage + ToDtype(scale=True); Normalize"
)
_FLOAT_DTYPES = {
    "torch.float32": "float32",
    "torch.float16": "float16",
    "torch.bfloat16": "bfloat16",
}


def recipe_from(transform: object) -> dict[str, Any]:
    """The `create_loader` keywords that `transform` spells, or a ConfigError saying why not."""
    steps = _flatten(transform)
    names = [type(step).__name__ for step in steps]
    recipe: dict[str, Any] = {"flip_prob": 0.0, "rotate_degrees": 0.0}
    rest = _geometry(steps, names, recipe)
    rest = _augmentation(rest, recipe)
    rest = _to_float(rest, recipe)
    where = "after the conversion to float"
    if rest and type(rest[0]).__name__ == "Normalize":
        recipe["mean"], recipe["std"] = _channels(rest[0].mean), _channels(rest[0].std)
        rest, where = rest[1:], "after Normalize"
    else:
        recipe["mean"], recipe["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if rest:
        raise _unsupported(rest[0], where)
    return recipe


def _flatten(transform: object) -> list[Any]:
    if type(transform).__name__ == "Compose" and _is_torchvisions(transform):
        return [step for inner in transform.transforms for step in _flatten(inner)]  # type: ignore[attr-defined]
    if not _is_torchvisions(transform):
        raise _unsupported(transform, "not one of torchvision's transforms")
    return [transform]


def _is_torchvisions(step: object) -> bool:
    return type(step).__module__.startswith("torchvision.transforms")


def _geometry(steps: list[Any], names: list[str], recipe: dict[str, Any]) -> list[Any]:
    if names[:1] == ["RandomResizedCrop"]:
        crop = steps[0]
        _bilinear(crop, "RandomResizedCrop")
        recipe.update(
            train=True,
            image_size=tuple(crop.size),
            scale=tuple(crop.scale),
            ratio=tuple(crop.ratio),
        )
        return steps[1:]
    if names[:2] == ["Resize", "CenterCrop"]:
        resize, center = steps[0], steps[1]
        size = resize.size  # an int (the shorter side), or [int] in v2, or (h, w)
        sizes = list(size) if isinstance(size, (list, tuple)) else [size]
        shorter = sizes[0] if len(sizes) == 1 and isinstance(sizes[0], int) else None
        height, width = center.size
        if (
            shorter is None
            or getattr(resize, "max_size", None) is not None
            or shorter != int(max(height, width) / EVAL_CROP_FRACTION)
        ):
            raise ConfigError(
                f"Resize({resize.size}) + CenterCrop({center.size}): the eval recipe taken is "
                f"Resize(s) + CenterCrop(c) with s = int(c / {EVAL_CROP_FRACTION}) (256 for 224), "
                "one int each; other sizes are not taken yet"
            )
        _bilinear(resize, "Resize")
        recipe.update(train=False, image_size=(height, width))
        return steps[2:]
    raise _misplaced(
        steps,
        "starts with {found}: it must start with RandomResizedCrop (train) or Resize + "
        "CenterCrop (eval), the crop that fixes the output size",
    )


def _augmentation(steps: list[Any], recipe: dict[str, Any]) -> list[Any]:
    """RandomHorizontalFlip and RandomRotation, in either order (their angles are symmetric,
    so flip-then-turn and turn-then-flip draw the same images)."""
    seen: set[str] = set()
    while steps and type(steps[0]).__name__ in ("RandomHorizontalFlip", "RandomRotation"):
        step, name = steps[0], type(steps[0]).__name__
        if not recipe["train"]:
            raise _unsupported(step, "random in an eval pipeline")
        if name in seen:  # two flips flip at another rate; two turns add their angles
            raise _unsupported(step, f"a second {name}")
        seen.add(name)
        if name == "RandomHorizontalFlip":
            recipe["flip_prob"] = float(step.p)
        else:
            low, high = (float(d) for d in step.degrees)
            if low != -high or step.expand or step.center is not None or not _black(step.fill):
                raise ConfigError(
                    f"{step!r}: taken as RandomRotation(d) with the default center, expand=False "
                    "and fill=0 (angles uniform in [-d, d])"
                )
            recipe["rotate_degrees"] = high
        steps = steps[1:]
    return steps


def _to_float(steps: list[Any], recipe: dict[str, Any]) -> list[Any]:
    names = [type(step).__name__ for step in steps[:2]]
    if names[:1] == ["ToTensor"]:
        recipe["dtype"] = "float32"
        return steps[1:]
    if names in (["PILToTensor", "ConvertImageDtype"], ["ToImage", "ToDtype"]):
        convert = steps[1]
        dtype = _FLOAT_DTYPES.get(str(convert.dtype))
        if dtype is None or getattr(convert, "scale", True) is not True:
            raise _unsupported(convert, "the loader delivers float images on the 0..1 scale")
        recipe["dtype"] = dtype
        return steps[2:]
    raise _misplaced(
        steps,
        "has {found} where the pixels become floats: end the geometry with ToTensor() (or "
        "ToImage() + ToDtype(torch.float32, scale=True)), then Normalize",
    )


def _black(fill: Any) -> bool:
    """Whether a rotation's fill is black for images (v2's fill may be a dict by type)."""
    if isinstance(fill, dict):
        from PIL import Image

        image_keys = [k for k in fill if getattr(k, "__name__", "") == "Image"]
        for key in [*image_keys, Image.Image, "others"]:
            if key in fill:
                return _black(fill[key])
        return True  # no entry for images: they are filled with 0
    values = fill if isinstance(fill, (list, tuple)) else [fill]
    return all(value is None or value == 0 for value in values)


def _bilinear(step: Any, name: str) -> None:
    from torchvision.transforms import InterpolationMode

    mode = getattr(step, "interpolation", InterpolationMode.BILINEAR)
    # v1 keeps an InterpolationMode; v2 its value ("bilinear"), or PIL's constant 2 as given
    v2 = ".v2." in type(step).__module__
    bilinear = (InterpolationMode.BILINEAR, *((InterpolationMode.BILINEAR.value, 2) if v2 else ()))
    if mode not in bilinear or getattr(step, "antialias", True) is False:
        raise ConfigError(
            f"{name} with interpolation={mode}, antialias={getattr(step, 'antialias', None)}: "
            "the loader resizes bilinear and antialiased on every backend"
        )


def _channels(values: Any) -> tuple[float, float, float]:
    """Normalize's mean or std for the 3 channels; one value is every channel's, as in torch."""
    listed = values.tolist() if hasattr(values, "tolist") else values
    items = listed if isinstance(listed, (list, tuple)) else [listed]
    if len(items) == 1:
        items = list(items) * 3
    try:
        first, second, third = (float(v) for v in items)
    except (TypeError, ValueError):
        raise ConfigError(
            f"Normalize needs one value, or one per RGB channel, got {values!r}"
        ) from None
    return first, second, third


def _misplaced(steps: list[Any], what: str) -> ConfigError:
    """The step (or the end, "nothing") found where the recipe needs another: `what` says so,
    with {found} for its name."""
    found = type(steps[0]).__name__ if steps else "nothing"
    return ConfigError(
        f"transform= {what.format(found=found)}. Taken: {SUPPORTED}. "
        "Or pass the recipe as keywords."
    )


def _unsupported(step: object, why: str) -> ConfigError:
    return ConfigError(
        f"transform= cannot take {type(step).__name__} ({why}). Taken: {SUPPORTED}. "
        "Pass the recipe as keywords instead, or use torchvision's DataLoader for this pipeline"
    )
