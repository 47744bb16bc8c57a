"""An image folder cut from real photographs, for benchmarks on data our generator did not make.

2,000 JPEGs of 500x375 (a third of them 375x500), quality 95, ~62 KB each, in 10 classes: random
crops at random scales of the sample photographs that scikit-image and matplotlib ship
(astronaut, cat, coffee, motorcycle, rocket, retina, Hubble deep field, brick, grass, gravel,
Grace Hopper), some mirrored. Those two packages are not dependencies of dali-loader: install
them anywhere and point `--site` at that environment's site-packages.

    python benchmarks/photo_set.py OUT [--site SITE_PACKAGES] [--images 2000]
"""

from __future__ import annotations

import argparse
import random
import site
from pathlib import Path

from PIL import Image

_SKIMAGE = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg"]
_SKIMAGE += ["retina.jpg", "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png"]
_MATPLOTLIB = ["grace_hopper.jpg"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--site", type=Path, default=Path(site.getsitepackages()[0]))
    parser.add_argument("--images", type=int, default=2000)
    args = parser.parse_args()
    paths = [args.site / "skimage" / "data" / name for name in _SKIMAGE]
    paths += [args.site / "matplotlib" / "mpl-data" / "sample_data" / n for n in _MATPLOTLIB]
    sources = [Image.open(path).convert("RGB") for path in paths]
    rng, total = random.Random(0), 0
    for i in range(args.images):
        source = sources[rng.randrange(len(sources))]
        width, height = source.size
        crop_w = rng.randint(min(width, 160), width)
        crop_h = min(height, int(crop_w * 0.75 * rng.uniform(0.8, 1.25)))
        x, y = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        image = source.crop((x, y, x + crop_w, y + crop_h)).resize((500, 375), Image.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if rng.random() < 0.3:  # portrait
            image = image.rotate(90, expand=True).resize((375, 500))
        folder = args.out / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i:05d}.jpg"
        image.save(path, quality=95)
        total += path.stat().st_size
    print(f"{args.images} images in {args.out}, {total / args.images / 1024:.1f} KB on average")


if __name__ == "__main__":
    main()
