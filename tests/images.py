"""Images for tests: real photographs that scikit-image ships, and generated ones."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

SKIMAGE_DATA = Path(os.path.dirname(skimage.data.__file__))
#: Chelsea the cat (ImageNet cats are classes 281-285).
CAT_PNG = SKIMAGE_DATA / "chelsea.png"
#: A cup of coffee (ImageNet 967 "espresso").
COFFEE_PNG = SKIMAGE_DATA / "coffee.png"
#: A real JPEG photograph of a rocket launch.
ROCKET_JPG = SKIMAGE_DATA / "rocket.jpg"
CAT_CLASSES = frozenset(range(281, 286))
ESPRESSO = 967


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    """Encode ``image`` in ``fmt`` and return the bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def cat_jpeg(quality: int = 90) -> bytes:
    """The cat photo as a JPEG."""
    with Image.open(CAT_PNG) as image:
        return encode(image.convert("RGB"), "JPEG", quality=quality)


def gradient(width: int = 320, height: int = 240) -> Image.Image:
    """A colourful RGB test pattern."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    r = np.tile(x, (height, 1))
    g = np.tile(y[:, None], (1, width))
    b = (r + g) / 2
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8))
