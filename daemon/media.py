"""Images in a request, decoded once at admission: a corrupt one is the client's 400 naming the field and
nothing is queued; the runner gets plain RGB pixels (no second decoder, no format quirks such as
llama.cpp's failing WebP), and each image's digest is its identity in every cache key.

JPEG, PNG, WebP, GIF (its first frame) and BMP; EXIF rotation applied; transparency flattened onto
white. Caps keep a request's memory bounded: images per request, and decoded pixels per image (a
decompression bomb is refused from its header, before any pixel is decoded).
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

from rk.daemon.errors import RkError

MAX_IMAGES = 16  # per request
MAX_PIXELS = 40_000_000  # per image, decoded (a 40 MP photo; Pillow warns of bombs at 89 MP)
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
BACKGROUND = (255, 255, 255)  # what transparent pixels become


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: bytes  # 8-bit RGB, rows top to bottom: width * height * 3 bytes
    digest: str  # sha256 of the size and pixels: the same picture is the same image, whatever its file format


def decode(data: bytes, where: str) -> Image:
    """An image file's pixels, upright and opaque; anything else is a `bad_request` naming `where`."""
    from PIL import Image as Pil
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with Pil.open(io.BytesIO(data), formats=FORMATS) as im:
            if im.width * im.height > MAX_PIXELS:
                raise RkError("bad_request", f"'{where}' is {im.width}x{im.height} pixels; the most rk decodes is "
                              f"{MAX_PIXELS:,} pixels per image", param=where)
            im.seek(0)
            im.load()
            upright = ImageOps.exif_transpose(im)
            if upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info):
                rgba = upright.convert("RGBA")
                flat = Pil.new("RGB", rgba.size, BACKGROUND)
                flat.paste(rgba, mask=rgba.getchannel("A"))
                upright = flat
            rgb = upright.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Pil.DecompressionBombError):
        raise RkError("bad_request", f"'{where}' is not an image rk can read ({', '.join(FORMATS)})", param=where) from None
    pixels = rgb.tobytes()
    digest = hashlib.sha256(f"{rgb.width}x{rgb.height}:".encode() + pixels).hexdigest()
    return Image(rgb.width, rgb.height, pixels, digest)


def check_count(n: int, where: str) -> None:
    if n > MAX_IMAGES:
        raise RkError("bad_request", f"'{where}' carries {n} images; at most {MAX_IMAGES} per request", param=where)
