"""Decoding and preprocessing: every format and mode, orientation, limits, failures."""

from __future__ import annotations

import io
import zlib

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from inference_gateway.errors import ImageTooLargeException, InvalidImageException
from inference_gateway.inference.preprocess import (
    ImageLimits,
    PreprocessConfig,
    decode,
    harden_pillow,
    open_image,
    prepare_image,
    resize_crop_normalize,
    to_rgb,
)
from tests.images import ROCKET_JPG, cat_jpeg, encode, gradient

LIMITS = ImageLimits()
CONFIG = PreprocessConfig()


def _mode(image: Image.Image, mode: str) -> Image.Image:
    if mode == "PA":
        return image.convert("P").convert("PA")
    if mode == "P+transparency":
        palette = image.convert("P")
        palette.info["transparency"] = 0
        return palette
    if mode in ("I;16", "I"):
        values = np.asarray(image.convert("L"), dtype=np.uint16) * 257
        sixteen = Image.fromarray(values.astype(np.uint16))
        return sixteen if mode == "I;16" else sixteen.convert(mode)
    if mode == "F":
        return Image.fromarray(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)
    return image.convert(mode)


FORMAT_MODES = [
    ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"),
    ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "LA"), ("PNG", "P"),
    ("PNG", "P+transparency"), ("PNG", "1"), ("PNG", "I;16"),
    ("WEBP", "RGB"), ("WEBP", "RGBA"),
    ("GIF", "P"), ("GIF", "L"),
    ("BMP", "RGB"), ("BMP", "1"), ("BMP", "P"),
    ("TIFF", "RGB"), ("TIFF", "CMYK"), ("TIFF", "I;16"), ("TIFF", "F"), ("TIFF", "LA"),
    ("TIFF", "RGBA"), ("TIFF", "I"),
]  # fmt: skip


@pytest.mark.parametrize(("fmt", "mode"), FORMAT_MODES, ids=[f"{f}-{m}" for f, m in FORMAT_MODES])
def test_every_format_and_mode_becomes_a_normalised_rgb_tensor(fmt: str, mode: str) -> None:
    data = encode(_mode(gradient(), mode), fmt)
    prepared = prepare_image(data, LIMITS, CONFIG)
    assert prepared.tensor.shape == (3, 224, 224)
    assert prepared.tensor.dtype == np.float32
    assert np.isfinite(prepared.tensor).all()
    assert prepared.tensor.min() >= -1.0 and prepared.tensor.max() <= 1.0
    assert prepared.info.format == fmt.lower()
    assert (prepared.info.width, prepared.info.height) == (320, 240)


def test_sixteen_bit_images_are_scaled_not_clipped_to_white() -> None:
    data = encode(_mode(gradient(), "I;16"), "PNG")
    tensor = prepare_image(data, LIMITS, CONFIG).tensor
    assert tensor.std() > 0.2  # a clipped image would be uniformly white


def test_transparency_is_composited_onto_white() -> None:
    clear = Image.new("RGBA", (64, 64), (255, 0, 0, 0))
    rgb = to_rgb(clear)
    assert rgb.mode == "RGB"
    assert rgb.getpixel((10, 10)) == (255, 255, 255)
    half = Image.new("LA", (8, 8), (0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)


def test_exif_orientation_is_applied() -> None:
    # Left half red, right half blue, landscape; EXIF 6 = display rotated 90° clockwise.
    pixels = np.zeros((200, 400, 3), dtype=np.uint8)
    pixels[:, :200] = (255, 0, 0)
    pixels[:, 200:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    oriented = decode(open_image(data, LIMITS), CONFIG)
    assert oriented.size == (200, 400)
    top = oriented.convert("RGB").getpixel((100, 20))
    bottom = oriented.convert("RGB").getpixel((100, 380))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_gif_uses_the_first_frame_and_tiff_the_first_page() -> None:
    frames = [Image.new("RGB", (64, 64), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    first = to_rgb(decode(open_image(buffer.getvalue(), LIMITS), CONFIG))
    assert first.getpixel((5, 5))[0] > 200
    buffer = io.BytesIO()
    frames[1].save(buffer, format="TIFF", save_all=True, append_images=[frames[2]])
    page = to_rgb(decode(open_image(buffer.getvalue(), LIMITS), CONFIG))
    assert page.getpixel((5, 5))[1] > 200


def test_large_jpeg_decodes_in_draft_mode_at_reduced_scale() -> None:
    big = gradient(2048, 1536)
    image = open_image(encode(big, "JPEG"), LIMITS)
    decoded = decode(image, CONFIG)
    assert CONFIG.resize_shortest is not None
    assert min(decoded.size) >= CONFIG.resize_shortest
    assert decoded.size[0] < 2048  # libjpeg scaled it down while decoding


def test_resize_crop_equals_resize_then_centre_crop() -> None:
    image = Image.open(ROCKET_JPG).convert("RGB")
    ours = resize_crop_normalize(image, CONFIG)
    w, h = image.size
    scale = 256 / min(w, h)
    resized = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    left, top = (resized.width - 224) // 2, (resized.height - 224) // 2
    reference = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    reference = ((reference - 127) / 128).transpose(2, 0, 1)
    assert np.abs(ours - reference).mean() < 0.02


def test_extreme_aspect_ratio_within_limits_is_accepted() -> None:
    strip = Image.new("RGB", (10_000, 1), (10, 200, 30))
    tensor = prepare_image(encode(strip, "PNG"), LIMITS, CONFIG).tensor
    assert tensor.shape == (3, 224, 224)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello, world", "unsupported_format"),
        (b"<html><body>hi</body></html>", "unsupported_format"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "unsupported_format"),
        (b"PK\x03\x04" + b"\x00" * 100, "unsupported_format"),
        (cat_jpeg()[:2000], "truncated"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64, "corrupt"),
    ],
    ids=["empty", "text", "html", "svg", "zip", "truncated-jpeg", "jpeg-header-garbage"],
)
def test_undecodable_payloads_raise_invalid_image_with_a_bounded_reason(
    data: bytes, reason: str
) -> None:
    with pytest.raises(InvalidImageException) as info:
        prepare_image(data, LIMITS, CONFIG)
    assert info.value.reason == reason


def test_corrupt_png_payload_is_invalid() -> None:
    data = bytearray(encode(gradient(), "PNG"))
    data[60:200] = b"\x00" * 140  # destroy IDAT contents
    with pytest.raises(InvalidImageException):
        prepare_image(bytes(data), LIMITS, CONFIG)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("width", "height"),
    [(1, 200_000), (100_000, 100_000), (8000, 8000)],
    ids=["too-long-side", "bomb-10-gigapixel", "bomb-64-megapixel"],
)
def test_images_over_the_limits_are_refused_before_decoding(width: int, height: int) -> None:
    harden_pillow()
    with pytest.raises(ImageTooLargeException) as info:
        prepare_image(_png_header_only(width, height), LIMITS, CONFIG)
    assert info.value.reason == "too_large"


def test_gif_bomb_is_refused() -> None:
    # A GIF whose logical screen is 65535x65535 but whose data is tiny.
    gif = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
    gif[6:10] = (65535).to_bytes(2, "little") * 2
    with pytest.raises(InvalidImageException):
        prepare_image(bytes(gif), LIMITS, CONFIG)


class TestConfigurablePreprocessing:
    """Every model's preprocessing is data; one function honours each key."""

    PHOTO = ROCKET_JPG

    def tensor(self, config: PreprocessConfig) -> npt.NDArray[np.float32]:
        return prepare_image(self.PHOTO.read_bytes(), LIMITS, config).tensor

    def test_the_layout_and_colour_order_only_rearrange_the_same_values(self) -> None:
        chw = self.tensor(CONFIG)
        hwc = self.tensor(PreprocessConfig(layout="NHWC"))
        bgr = self.tensor(PreprocessConfig(color="BGR", mean=(1.0, 2.0, 3.0)))
        assert hwc.shape == (224, 224, 3) and np.array_equal(hwc, chw.transpose(1, 2, 0))
        # BGR: channel 0 is blue, and mean/std apply in that order.
        rgb = self.tensor(PreprocessConfig(mean=(3.0, 2.0, 1.0)))
        assert np.array_equal(bgr, rgb[::-1])

    def test_scale_mean_and_std_give_the_imagenet_convention(self) -> None:
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        imagenet = self.tensor(PreprocessConfig(scale=1 / 255, mean=mean, std=std))
        pixels = self.tensor(PreprocessConfig(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
        expected = (pixels / 255 - np.asarray(mean)[:, None, None]) / np.asarray(std)[:, None, None]
        assert np.allclose(imagenet, expected, atol=1e-5)

    def test_resize_to_an_exact_size_ignores_the_aspect_ratio(self) -> None:
        config = PreprocessConfig(resize_shortest=None, resize_to=(320, 200), crop=None)
        tensor = self.tensor(config)
        assert tensor.shape == config.tensor_shape == (3, 200, 320)
        with Image.open(self.PHOTO) as image:
            reference = image.convert("RGB").resize((320, 200), Image.Resampling.BILINEAR)
        expected = (np.asarray(reference, dtype=np.float32).transpose(2, 0, 1) - 127) / 128
        assert np.abs(tensor - expected).mean() < 0.02

    def test_a_rectangular_crop_after_an_exact_resize(self) -> None:
        config = PreprocessConfig(resize_shortest=None, resize_to=(300, 260), crop=(200, 100))
        tensor = self.tensor(config)
        assert tensor.shape == (3, 100, 200)
        with Image.open(self.PHOTO) as image:
            resized = image.convert("RGB").resize((300, 260), Image.Resampling.BILINEAR)
        expected = np.asarray(resized.crop((50, 80, 250, 180)), dtype=np.float32)
        assert np.abs(tensor - (expected.transpose(2, 0, 1) - 127) / 128).mean() < 0.02

    @pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
    def test_each_interpolation_is_honoured(self, interpolation: str) -> None:
        config = PreprocessConfig(interpolation=interpolation)  # type: ignore[arg-type]
        tensor = self.tensor(config)
        with Image.open(self.PHOTO) as image:
            rgb = image.convert("RGB")
        side = min(rgb.size) * 224 / 256
        left, top = (rgb.width - side) / 2, (rgb.height - side) / 2
        method = getattr(Image.Resampling, interpolation.upper())
        expected = rgb.resize((224, 224), method, box=(left, top, left + side, top + side))
        expected_tensor = (np.asarray(expected, dtype=np.float32).transpose(2, 0, 1) - 127) / 128
        assert np.array_equal(tensor, expected_tensor.astype(np.float32))

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"resize_to": (10, 10)}, "either a shortest side or a width and height"),
            ({"crop": None}, "one size"),
            ({"crop": (300, 300)}, "larger than the resized image"),
            ({"std": (1.0, 0.0, 1.0)}, "std must not be zero"),
            ({"mean": (1.0, 2.0)}, "one value per channel"),
            ({"interpolation": "cubic"}, "interpolation must be one of"),
            ({"layout": "CHW"}, "layout must be"),
            ({"color": "RGBA"}, "color must be"),
            ({"scale": 0.0}, "scale must be"),
            ({"crop": (0, 224)}, "must be positive"),
        ],
    )
    def test_impossible_settings_are_refused_with_a_reason(
        self, overrides: dict[str, object], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            PreprocessConfig(**overrides)  # type: ignore[arg-type]
