"""Bytes → float32 tensor: decode, orient, convert to RGB, resize, crop, normalise.

Every model's preprocessing is data (`PreprocessConfig`: resize, crop, interpolation,
scale, mean, std, layout, colour order) and `prepare_image` applies any of them: there
is no per-model code.

Pure functions with no I/O beyond the bytes they are given. Where they run is
`ModelHost`'s choice (inference/host.py). With ``PREPROCESS_WORKERS=0`` (the default),
a worker whose share of the cores is one has no pool
(``Settings.effective_preprocess_workers`` is 0) and runs them on its event loop: so
does every worker `serve` starts by default (one per usable core, at most 4) on a
machine with fewer than 8 cores. `open_image` then reads the header on the loop, and
decoding and preprocessing follow there when `quick_to_decode` accepts the image
(JPEGs up to 16 MP, other formats up to 1 MP); larger images go to a thread. Otherwise
they run in the host's preprocessing thread pool. Every failure is an
`InvalidImageException` with a bounded ``reason`` (used as a metric label), never a
Pillow exception.
"""

from __future__ import annotations

import ctypes
import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from inference_gateway.errors import ImageTooLargeException, InvalidImageException
from inference_gateway.inference.quality import (
    SIGNAL_STRIDE,
    ImageProbe,
    jpeg_quality,
)

#: The formats Pillow may open; everything else is refused before any plugin parses it.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: Bounded values of the ``reason`` label of decode failures.
DECODE_FAILURE_REASONS: tuple[str, ...] = (
    "empty",
    "unsupported_format",
    "truncated",
    "corrupt",
    "too_large",
)

_WHITE = (255, 255, 255)

#: Leading bytes of the allowed formats: an unidentifiable payload that starts like one
#: of them is a corrupt image, not a foreign format.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def sniff_format(data: bytes) -> str | None:
    """The allowed format ``data`` claims to be by its leading bytes, if any."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
Layout = Literal["NCHW", "NHWC"]
ColorOrder = Literal["RGB", "BGR"]
#: What the model's image input takes: normalised float32 or float16, or the pixels as
#: they are (uint8, 0-255: the graph normalises them itself).
InputType = Literal["float32", "float16", "uint8"]
#: The ONNX tensor types of those.
ONNX_INPUT_TYPES: dict[str, InputType] = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
}

_RESAMPLING: dict[str, Image.Resampling] = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True, slots=True)
class PreprocessConfig:
    """How a model expects its input, as data; the defaults are the built-in model's.

    In order: resize (the shorter side to ``resize_shortest`` keeping the aspect, or to
    exactly ``resize_to`` = (width, height), or not at all), centre crop ``crop`` =
    (width, height) (or none), then per channel ``(pixel * scale - mean) / std`` on
    0..255 pixels, channels in ``color`` order, laid out ``layout`` (one image: CHW or
    HWC). The result always has one fixed size, so images batch together. Invalid
    combinations raise ``ValueError`` saying what is wrong.
    """

    resize_shortest: int | None = 256
    resize_to: tuple[int, int] | None = None
    crop: tuple[int, int] | None = (224, 224)
    interpolation: Interpolation = "bilinear"
    scale: float = 1.0
    mean: tuple[float, float, float] = (127.0, 127.0, 127.0)
    std: tuple[float, float, float] = (128.0, 128.0, 128.0)
    layout: Layout = "NCHW"
    color: ColorOrder = "RGB"
    #: Set from the graph's input when a version loads: ``uint8`` skips ``scale``,
    #: ``mean`` and ``std`` (the graph normalises), ``float16`` rounds the float32 result.
    input_type: InputType = "float32"

    def __post_init__(self) -> None:
        """Refuse what cannot give one fixed-size tensor."""
        self._check_geometry()
        self._check_values()

    def _check_geometry(self) -> None:
        if self.resize_shortest is not None and self.resize_to is not None:
            raise ValueError("resize takes either a shortest side or a width and height")
        for what, size in (("resize", self.resize_to), ("crop", self.crop)):
            if size is not None and (len(size) != 2 or min(size) < 1):
                raise ValueError(f"{what} width and height must be positive, not {size}")
        if self.resize_shortest is not None and self.resize_shortest < 1:
            raise ValueError(f"resize shortest must be positive, not {self.resize_shortest}")
        if self.crop is None and self.resize_to is None:
            raise ValueError(
                "preprocessing must give every image one size: set a crop, or resize to a "
                "width and height"
            )
        if self.crop is not None:
            fits = (
                self.resize_to
                if self.resize_to is not None
                else (self.resize_shortest, self.resize_shortest)
                if self.resize_shortest is not None
                else None
            )
            if fits is not None and (self.crop[0] > fits[0] or self.crop[1] > fits[1]):
                raise ValueError(f"the crop {self.crop} is larger than the resized image {fits}")

    def _check_values(self) -> None:
        if self.interpolation not in _RESAMPLING:
            raise ValueError(f"interpolation must be one of {', '.join(_RESAMPLING)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need one value per channel (3)")
        if any(v == 0 for v in self.std):
            raise ValueError("std must not be zero")
        if not math.isfinite(self.scale) or self.scale == 0:
            raise ValueError("scale must be a finite, non-zero number")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError("layout must be NCHW or NHWC")
        if self.color not in ("RGB", "BGR"):
            raise ValueError("color must be RGB or BGR")
        if self.input_type not in ("float32", "float16", "uint8"):
            raise ValueError("the input type must be float32, float16 or uint8")

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of every preprocessed image."""
        size = self.crop if self.crop is not None else self.resize_to
        assert size is not None  # noqa: S101 - __post_init__ guarantees it
        return size

    @property
    def tensor_shape(self) -> tuple[int, int, int]:
        """The shape of one image's tensor: (3, H, W) or (H, W, 3)."""
        width, height = self.output_size
        return (3, height, width) if self.layout == "NCHW" else (height, width, 3)

    def resized_size(self, width: int, height: int) -> tuple[float, float]:
        """The (width, height) an image of this size has after the resize step."""
        if self.resize_to is not None:
            return float(self.resize_to[0]), float(self.resize_to[1])
        if self.resize_shortest is not None:
            factor = self.resize_shortest / min(width, height)
            return width * factor, height * factor
        return float(width), float(height)


@dataclass(frozen=True, slots=True)
class ImageLimits:
    """Dimensions above which an image is refused before it is decoded."""

    max_pixels: int = 40_000_000
    max_side: int = 16_384


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What the gateway learned about an uploaded image (for telemetry and spans)."""

    format: str
    width: int
    height: int
    mode: str
    size_bytes: int
    #: What the model-quality input signals are measured from (a sample of the crop
    #: the model sees, and header facts); None when not asked for (a version without
    #: a reference).
    probe: ImageProbe | None = None


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """A model-ready tensor and the facts about the image it came from."""

    tensor: npt.NDArray[np.float32]
    info: ImageInfo


def harden_pillow() -> None:
    """Make Pillow's decompression-bomb warning an error for this process, and keep
    libtiff from printing on stderr (`silence_libtiff`).

    Called once at application start-up (it changes process-wide warning filters).
    """
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    silence_libtiff()


@cache
def silence_libtiff() -> bool:
    """Clear the error and warning handlers of the libtiff that Pillow uses.

    libtiff prints what it finds wrong in a TIFF (``PackBitsDecode: Not enough data for
    scanline 0.``) straight to the process's stderr, once per corrupt image, outside
    Python and its logging: where a platform merges the streams, that breaks one JSON
    object per line, and a client can make it print at will. Pillow still raises for
    such an image (a 400 ``invalid-image``, on the request's access line), so the
    printout says nothing the log does not. Returns whether the handlers were found
    (Linux: the library is found among the process's mappings; elsewhere it is left as is).
    """
    from PIL import _imaging  # noqa: F401 - libtiff is loaded with it

    try:
        with open("/proc/self/maps", encoding="utf-8", errors="surrogateescape") as maps:
            paths = {line.split()[-1] for line in maps if "libtiff" in line.rsplit("/", 1)[-1]}
    except OSError:
        return False
    found = False
    for path in sorted(paths):
        try:
            library = ctypes.CDLL(path)  # the already loaded copy: dlopen shares it
            library.TIFFSetErrorHandler.restype = ctypes.c_void_p
            library.TIFFSetWarningHandler.restype = ctypes.c_void_p
            library.TIFFSetErrorHandler(None)
            library.TIFFSetWarningHandler(None)
        except (OSError, AttributeError):
            continue
        found = True
    return found


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Identify the image from its bytes and check its dimensions, without decoding pixels.

    The format is decided by the bytes, not by any declared content type.
    """
    if not data:
        raise InvalidImageException("The request body is empty.", reason="empty")
    try:
        image = Image.open(io.BytesIO(data), formats=list(ALLOWED_FORMATS))
    except UnidentifiedImageError:
        claimed = sniff_format(data)
        if claimed is not None:
            raise InvalidImageException(
                f"The payload starts like a {claimed} image but its header is corrupt.",
                reason="corrupt",
            ) from None
        raise InvalidImageException(
            "The payload is not an image in a supported format "
            f"({', '.join(f.lower() for f in ALLOWED_FORMATS)}).",
            reason="unsupported_format",
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeException("The image's dimensions exceed the pixel limit.") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, zlib.error):
        raise InvalidImageException("The image header is corrupt.", reason="corrupt") from None
    check_dimensions(image.size, limits)
    return image


#: A worker that decodes on its event loop does so only for images that decode in a few
#: milliseconds: JPEGs up to this many pixels (draft mode decodes them at 1/2 to 1/8
#: scale) ...
INLINE_JPEG_PIXELS = 16_000_000
#: ... and other formats up to this many; anything larger goes to a thread, so one big
#: upload cannot stall every other connection of the worker.
INLINE_OTHER_PIXELS = 1_000_000


def quick_to_decode(image: Image.Image) -> bool:
    """Whether an opened (not yet decoded) image decodes in a few milliseconds."""
    pixels = image.size[0] * image.size[1]
    return pixels <= (INLINE_JPEG_PIXELS if image.format == "JPEG" else INLINE_OTHER_PIXELS)


def check_dimensions(size: tuple[int, int], limits: ImageLimits) -> None:
    """Refuse images whose side or pixel count exceeds the limits."""
    width, height = size
    if width < 1 or height < 1:
        raise InvalidImageException("The image has no pixels.", reason="corrupt")
    if max(width, height) > limits.max_side:
        raise ImageTooLargeException(
            f"The image is {width}x{height}; the longest side may be at most "
            f"{limits.max_side} pixels."
        )
    if width * height > limits.max_pixels:
        raise ImageTooLargeException(
            f"The image is {width}x{height} ({width * height} pixels); "
            f"at most {limits.max_pixels} pixels are accepted."
        )


def decode(image: Image.Image, config: PreprocessConfig) -> Image.Image:
    """Decode pixels (JPEGs at reduced scale via draft mode) and apply EXIF orientation."""
    width, height = image.size
    if image.format == "JPEG":
        # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale while keeping at least
        # the resolution the resize step needs: most of the decode cost disappears.
        resized_width, resized_height = config.resized_size(width, height)
        scale = max(resized_width / width, resized_height / height)
        if scale < 1:
            image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
    try:
        image.load()
        oriented = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLargeException("The image's dimensions exceed the pixel limit.") from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        raise InvalidImageException(
            "The image data is truncated."
            if reason == "truncated"
            else "The image data is corrupt.",
            reason=reason,
        ) from None
    except (SyntaxError, ValueError, struct.error, EOFError, zlib.error, IndexError):
        raise InvalidImageException("The image data is corrupt.", reason="corrupt") from None
    return oriented


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB; transparency is composited onto white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith(("I", "F")):
        return _high_depth_to_rgb(image)
    if mode in ("P", "L", "RGB") and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit integer and float greyscale to 8 bits (no clipping to white)."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        peak = 1.0 if values.size and float(values.max()) <= 1.0 else 255.0
    elif image.mode.startswith("I;16") or (values.size and float(values.max()) > 255):
        peak = 65535.0
    else:
        peak = 255.0
    scaled = np.clip(np.nan_to_num(values) * (255.0 / peak), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled).convert("RGB")


def resize_crop_normalize(image: Image.Image, config: PreprocessConfig) -> npt.NDArray[np.float32]:
    """Resize, centre crop and normalise an RGB image into one float32 tensor."""
    return normalize(np.asarray(resize_crop(image, config)), config)


def resize_crop(image: Image.Image, config: PreprocessConfig) -> Image.Image:
    """Resize and centre crop an RGB image to the model's input size.

    The crop box is computed in source coordinates and resampled in one step, which
    equals resize-then-crop but never builds the intermediate image (a 1×10000 strip
    would otherwise become 256×2,560,000).
    """
    width, height = image.size
    resized_width, resized_height = config.resized_size(width, height)
    out_width, out_height = config.output_size
    fx, fy = width / resized_width, height / resized_height
    left = (resized_width - out_width) / 2 * fx
    top = (resized_height - out_height) / 2 * fy
    box = (left, top, left + out_width * fx, top + out_height * fy)
    return image.resize((out_width, out_height), _RESAMPLING[config.interpolation], box=box)


def normalize(pixels: npt.NDArray[np.uint8], config: PreprocessConfig) -> npt.NDArray[Any]:
    """The model's tensor of RGB pixels (HWC, uint8) already at its input size: float32
    normalised, float16 likewise, or for a ``uint8`` input the pixels themselves in the
    model's channel order and layout."""
    if config.color == "BGR":
        pixels = pixels[:, :, ::-1]
    if config.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    if config.input_type == "uint8":
        return np.ascontiguousarray(pixels)
    # (p * scale - mean) / std as (p - mean / scale) * (scale / std): one float32
    # allocation, subtract into it, scale in place (allocation is what costs on small
    # VMs, not arithmetic); with scale 1 this is exactly (p - mean) / std.
    offset, factor = _normalisation(config.mean, config.std, config.scale, config.layout)
    out = np.empty(pixels.shape, dtype=np.float32)
    np.subtract(pixels, offset, out=out, dtype=np.float32)
    out *= factor
    return out.astype(np.float16) if config.input_type == "float16" else out


@cache
def _normalisation(
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    scale: float,
    layout: Layout,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-channel offset and factor of `resize_crop_normalize`, shaped for ``layout``."""
    shape = (3, 1, 1) if layout == "NCHW" else (3,)
    offset = (np.asarray(mean, dtype=np.float64) / scale).astype(np.float32)
    factor = (np.float64(scale) / np.asarray(std, dtype=np.float64)).astype(np.float32)
    return offset.reshape(shape), factor.reshape(shape)


def _shown_aspect(width: int, height: int, shown: tuple[int, int]) -> float:
    """Width / height of the image as the model sees it: the header's exact size,
    turned when EXIF orientation turned the decoded image (whose own size draft mode
    may have rounded)."""
    if not width or not height or not shown[1]:
        return 0.0
    ratio, seen = width / height, shown[0] / shown[1]
    return 1 / ratio if abs(seen - 1 / ratio) < abs(seen - ratio) else ratio


def prepare_image(
    data: bytes, limits: ImageLimits, config: PreprocessConfig, measure: bool = True
) -> PreparedImage:
    """The whole transform: bytes in, model-ready tensor and image facts out."""
    return prepare_opened(open_image(data, limits), len(data), config, measure)


def prepare_opened(
    image: Image.Image, size_bytes: int, config: PreprocessConfig, measure: bool = True
) -> PreparedImage:
    """The transform after `open_image`: decode, convert, resize, normalise; and, with
    ``measure``, what the model-quality input signals are measured from later
    (`quality.measure`, many images at once; only versions with a reference need it)."""
    format_, (width, height), mode = (image.format or "unknown").lower(), image.size, image.mode
    tables = getattr(image, "quantization", None) if format_ == "jpeg" else None
    oriented = decode(image, config)
    resampled = resize_crop(to_rgb(oriented), config)
    pixels = np.asarray(resampled)
    probe = None
    if measure:
        probe = ImageProbe(
            sample=pixels[::SIGNAL_STRIDE, ::SIGNAL_STRIDE],  # a view: nothing copied
            pixels=width * height,
            aspect_ratio=_shown_aspect(width, height, oriented.size),
            format=format_,
            jpeg_quality=jpeg_quality(tables),
        )
    info = ImageInfo(
        format=format_, width=width, height=height, mode=mode, size_bytes=size_bytes, probe=probe
    )
    return PreparedImage(tensor=normalize(pixels, config), info=info)
