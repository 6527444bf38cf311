"""Image decoding for level-1 training and prediction.

JPEGs are decoded with libjpeg-turbo through ``simplejpeg`` when it is installed:
it is faster than Pillow and, in strict mode, turns libjpeg's "corrupt JPEG data"
warnings into errors, so a damaged file is skipped instead of silently decoded into
grey blocks (Pillow decodes such a file without complaint).  Everything else, and
JPEGs without ``simplejpeg``, goes through Pillow.  EXIF orientation is ignored on
purpose: the sensor's pixel grid, not the viewer's orientation, is what the model
learns from.

No decoder here can decode only a region of a baseline JPEG (Pillow's ``draft``
and libjpeg's scaling only *downscale*, which would destroy the sensor noise), so
a random crop costs a full decode; ``benchmarks/bench_level1.py`` measures it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "read_image", "probe_image", "has_fast_jpeg"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
_JPEG = frozenset({".jpg", ".jpeg"})

try:  # optional: libjpeg-turbo with strict corruption checks
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - exercised only without simplejpeg
    _sj = None


class ImageReadError(Exception):
    """Internal: a file could not be decoded (turned into a 'skipped' entry, never fatal)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def has_fast_jpeg() -> bool:
    """Whether ``simplejpeg`` (strict libjpeg-turbo decoding) is available."""
    return _sj is not None


def _is_jpeg_bytes(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def read_image(path: str | os.PathLike[str], *, decoder: str = "auto") -> np.ndarray:
    """Decode an image file into a ``(H, W, 3)`` uint8 RGB array.

    Parameters
    ----------
    path : path-like
    decoder : {"auto", "simplejpeg", "pil"}
        ``auto`` uses simplejpeg for JPEG data when installed, Pillow otherwise.

    Raises
    ------
    ImageReadError
        The file is missing, not an image, truncated or corrupt.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(p, "empty file")
    if decoder != "pil" and _sj is not None and _is_jpeg_bytes(data):
        try:
            arr = _sj.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as exc:
            raise ImageReadError(p, f"corrupt JPEG ({exc})") from None
        return arr
    if decoder == "simplejpeg":
        raise ImageReadError(p, "not JPEG data or simplejpeg is not installed")
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            return np.asarray(rgb)
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image file") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated / damaged
        raise ImageReadError(p, f"damaged image ({exc})") from None


def probe_image(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Width and height from the header only (cheap); raises :class:`ImageReadError` if unreadable."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError as exc:
        raise ImageReadError(p, f"cannot read file ({exc.strerror or exc})") from None
    if not head:
        raise ImageReadError(p, "empty file")
    if _sj is not None and _is_jpeg_bytes(head):
        try:
            h, w, _, _ = _sj.decode_jpeg_header(p.read_bytes())
            return int(w), int(h)
        except ValueError as exc:
            raise ImageReadError(p, f"bad JPEG header ({exc})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            return im.size
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(p, f"damaged image ({exc})") from None
