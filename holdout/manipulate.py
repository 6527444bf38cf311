"""The eight test-set manipulations of the IEEE camera model identification challenge.

Half of the challenge's test crops were altered by exactly one of:

============ =================================================================
name         operation
============ =================================================================
``jpg70``    re-encode as JPEG at quality 70, decode again
``jpg90``    re-encode as JPEG at quality 90, decode again
``resize0.5`` bicubic resize by a factor 0.5
``resize0.8`` bicubic resize by a factor 0.8
``resize1.5`` bicubic resize by a factor 1.5
``resize2.0`` bicubic resize by a factor 2.0
``gamma0.8`` gamma correction ``out = round(255 * (in / 255) ** 0.8)``
``gamma1.2`` gamma correction ``out = round(255 * (in / 255) ** 1.2)``
============ =================================================================

Crop order (the challenge's recipe): take the centre crop of *twice* the target
size, manipulate it, then take the centre crop of the target size.  The wide
first crop keeps the final crop clear of the borders, where bicubic kernels and
JPEG blocks see the crop edge.  The first crop's side is
``max(2 * size, ceil(size / factor))`` for a resize (a downscale by ``factor``
must still leave ``size`` pixels: for x0.5 that is 1024 = 2 * 512, so all eight
use ``2 * size``) and ``2 * size`` otherwise.  Both centre crops start at
``(side - crop) // 2``; with ``size = 512`` the second crop starts at pixel 256,
a multiple of 8, so it stays on the JPEG block grid of the re-encoded image.

Backends: ``"pil"`` (Pillow: ``Image.Resampling.BICUBIC``, which widens its kernel when
downscaling, i.e. antialiases, and ``Image.save(quality=q)`` with Pillow's
default 4:2:0 chroma subsampling) and ``"cv2"`` (OpenCV: ``INTER_CUBIC``, a
fixed 4x4 kernel without antialiasing, and ``cv2.imencode`` with
``IMWRITE_JPEG_QUALITY``, also 4:2:0).  Gamma is the same lookup table for both.

Every operation is deterministic; :func:`random_manipulation` draws a name from a
:class:`numpy.random.Generator`, so a seed fixes the whole sequence and the name
records what was done.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from holdout.errors import ImageError
from stacker.errors import ConfigError

__all__ = [
    "MANIPULATIONS",
    "BACKENDS",
    "manipulate",
    "random_manipulation",
    "parse_manipulation",
    "source_size",
    "gamma_lut",
    "center_crop",
]

#: The challenge's eight manipulations, by name, in a fixed order.
MANIPULATIONS: tuple[str, ...] = (
    "jpg70",
    "jpg90",
    "resize0.5",
    "resize0.8",
    "resize1.5",
    "resize2.0",
    "gamma0.8",
    "gamma1.2",
)

#: Supported implementations of the JPEG and resize operations.
BACKENDS: tuple[str, ...] = ("pil", "cv2")


def parse_manipulation(kind: str) -> tuple[str, float]:
    """Split a manipulation name into its operation and parameter.

    Returns ``("jpeg", quality)``, ``("resize", factor)`` or ``("gamma", gamma)``.

    Raises
    ------
    stacker.errors.ConfigError
        If ``kind`` is not one of :data:`MANIPULATIONS`.
    """
    if kind not in MANIPULATIONS:
        raise ConfigError(f"unknown manipulation {kind!r}; expected one of {', '.join(MANIPULATIONS)}")
    if kind.startswith("jpg"):
        return "jpeg", float(kind[3:])
    if kind.startswith("resize"):
        return "resize", float(kind[6:])
    return "gamma", float(kind[5:])


def source_size(kind: str, size: int) -> int:
    """Side of the first centre crop that ``kind`` needs to end with ``size`` pixels."""
    op, param = parse_manipulation(kind)
    if op == "resize":
        return max(2 * size, math.ceil(size / param))
    return 2 * size


def gamma_lut(gamma: float) -> np.ndarray:
    """The uint8 lookup table ``round(255 * (i / 255) ** gamma)`` for ``i = 0..255``."""
    x = np.arange(256, dtype=np.float64) / 255.0
    return np.rint(255.0 * x**gamma).clip(0, 255).astype(np.uint8)


def center_crop(arr: np.ndarray, side: int) -> np.ndarray:
    """The ``side`` x ``side`` centre crop of an ``(H, W, ...)`` array, starting at ``(dim - side) // 2``."""
    h, w = arr.shape[:2]
    if h < side or w < side:
        raise ImageError(f"image of {w}x{h} pixels is smaller than the {side}x{side} centre crop needed")
    top, left = (h - side) // 2, (w - side) // 2
    return arr[top : top + side, left : left + side]


def _as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ImageError(f"image array must be uint8, got {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ImageError(f"image array must be (H, W) or (H, W, 3) RGB, got shape {image.shape}")
    raise ImageError(f"expected a PIL image or a numpy array, got {type(image).__name__}")


def _jpeg(arr: np.ndarray, quality: int, backend: str) -> np.ndarray:
    if backend == "pil":
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as im:
            return np.asarray(im.convert("RGB"))
    import cv2

    ok, enc = cv2.imencode(".jpg", arr[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV failing on a valid uint8 array
        raise ImageError("OpenCV could not encode the image as JPEG")
    decoded = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    if decoded is None:  # pragma: no cover - OpenCV failing on its own encoding
        raise ImageError("OpenCV could not decode its JPEG")
    return decoded[:, :, ::-1]


def _resize(arr: np.ndarray, factor: float, backend: str) -> np.ndarray:
    h, w = arr.shape[:2]
    new_w, new_h = max(1, round(w * factor)), max(1, round(h * factor))
    if backend == "pil":
        return np.asarray(Image.fromarray(arr).resize((new_w, new_h), Image.Resampling.BICUBIC))
    import cv2

    return cv2.resize(arr, (new_w, new_h), interpolation=cv2.INTER_CUBIC)


def _apply(arr: np.ndarray, op: str, param: float, backend: str) -> np.ndarray:
    if op == "jpeg":
        return _jpeg(np.ascontiguousarray(arr), int(param), backend)
    if op == "resize":
        return _resize(np.ascontiguousarray(arr), param, backend)
    return gamma_lut(param)[arr]


def manipulate(
    image: Image.Image | np.ndarray,
    kind: str,
    *,
    size: int | None = 512,
    backend: str = "pil",
) -> Image.Image:
    """Apply one of the challenge's manipulations the way the test set was made.

    Parameters
    ----------
    image : PIL.Image.Image or numpy.ndarray
        The source photo; arrays are uint8 ``(H, W, 3)`` RGB or ``(H, W)`` grey.
        Other PIL modes are converted to RGB.
    kind : str
        One of :data:`MANIPULATIONS`.
    size : int or None, default 512
        Side of the output crop.  The image is first centre-cropped to
        :func:`source_size` (twice ``size``), manipulated, then centre-cropped
        to ``size``.  ``None`` manipulates the whole image without cropping
        (a resize then changes the output size).
    backend : {"pil", "cv2"}, default "pil"
        Library used for JPEG and resize.

    Returns
    -------
    PIL.Image.Image
        An RGB image, ``size`` x ``size`` unless ``size`` is None.

    Raises
    ------
    stacker.errors.ConfigError
        Unknown ``kind`` or ``backend``, or a non-positive ``size``.
    holdout.errors.ImageError
        The image is not an RGB/grey uint8 image, or is smaller than the first crop.
    """
    op, param = parse_manipulation(kind)
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if size is not None and (not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1):
        raise ConfigError(f"size must be a positive integer or None, got {size!r}")
    arr = _as_rgb_array(image)
    if size is None:
        return Image.fromarray(_apply(arr, op, param, backend))
    side = source_size(kind, int(size))
    h, w = arr.shape[:2]
    if h < side or w < side:
        raise ImageError(
            f"{kind} at size {size} needs a centre crop of {side}x{side} pixels, but the image is only {w}x{h}"
        )
    out = _apply(center_crop(arr, side), op, param, backend)
    return Image.fromarray(np.ascontiguousarray(center_crop(out, int(size))))


def random_manipulation(rng: np.random.Generator) -> str:
    """Draw one of :data:`MANIPULATIONS` uniformly with ``rng``."""
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return MANIPULATIONS[int(rng.integers(len(MANIPULATIONS)))]
