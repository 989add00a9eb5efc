"""Variants of scikit-image's colour photographs: a stand-in for production traffic.

Each variant is a random crop (45-100% of the shorter side, anywhere in the photo), an
optional horizontal flip, a small rotation (±8°), colour jitter (brightness, contrast
and saturation ×0.8-1.2) and a JPEG encoding at quality 70-95, drawn from a seeded
generator: two seeds give two disjoint sets made the same way, as a reference set and
a later day's traffic would be. The degradations a pipeline upstream can introduce —
darkening, blur, heavy re-encoding, greyscale — apply to any variant.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from tests.images import SKIMAGE_DATA

#: The colour photographs scikit-image ships (no download needed).
PHOTOS: tuple[str, ...] = (
    "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)  # fmt: skip


def _photos() -> list[Image.Image]:
    images = []
    for name in PHOTOS:
        with Image.open(SKIMAGE_DATA / name) as image:
            images.append(image.convert("RGB"))
    return images


def variant(photo: Image.Image, rng: random.Random) -> Image.Image:
    """One random variant of ``photo`` (see the module docstring)."""
    width, height = photo.size
    side = int(min(width, height) * rng.uniform(0.45, 1.0))
    aspect = rng.uniform(0.8, 1.25)
    crop_w, crop_h = min(width, int(side * aspect)), min(height, side)
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    image = photo.crop((left, top, left + crop_w, top + crop_h))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    image = image.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
    image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
    return ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))


def variants(count: int, seed: int, photos: tuple[int, ...] | None = None) -> Iterator[Image.Image]:
    """``count`` variants, cycling over the photos (or only those at indexes ``photos``)."""
    rng = random.Random(seed)
    chosen = _photos()
    if photos is not None:
        chosen = [chosen[i] for i in photos]
    for i in range(count):
        yield variant(chosen[i % len(chosen)], rng)


def jpeg(image: Image.Image, quality: int) -> bytes:
    """``image`` as a JPEG at ``quality``."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def darkened(image: Image.Image) -> Image.Image:
    """Pixel values ×0.4: an underexposed camera."""
    return ImageEnhance.Brightness(image).enhance(0.4)


def blurred(image: Image.Image) -> Image.Image:
    """A Gaussian blur of radius 4: a camera out of focus."""
    return image.filter(ImageFilter.GaussianBlur(4))


def greyscale(image: Image.Image) -> Image.Image:
    """The image without colour (still RGB, as a greyscale camera's JPEGs often are)."""
    return image.convert("L").convert("RGB")


def write_set(
    directory: Path,
    images: Iterator[Image.Image],
    change: Callable[[Image.Image], Image.Image] | None = None,
    quality: int | None = None,
    seed: int = 0,
) -> list[Path]:
    """Write each image (changed by ``change``) as a JPEG at ``quality`` (or a seeded
    70-95), and return the files."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, original in enumerate(images):
        image = change(original) if change is not None else original
        path = directory / f"{i:04d}.jpg"
        path.write_bytes(jpeg(image, quality if quality is not None else rng.randint(70, 95)))
        paths.append(path)
    return paths
