"""An uploaded file, checked before its pixels are decoded: size, pixel count, and whether PIL reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..data.reading import read_image

MAX_PIXELS = 40_000_000
"""Default upper bound on an uploaded image's width x height (decoding is refused above it)."""
MAX_BYTES = 100 * 1024 * 1024
"""Upper bound on an uploaded file's size."""


class UploadError(ValueError):
    """An uploaded file that cannot be segmented; the message says why in one line."""


def read_upload(path: str | Path, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an uploaded file, checked before its pixels are decoded.

    Raises:
        UploadError: not an image, an empty or too large file, or more than ``max_pixels`` pixels.
    """
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size == 0:
        raise UploadError(f"{name} is empty")
    if size > max_bytes:
        raise UploadError(f"{name} is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise UploadError(
                    f"{name} is {width} x {height} pixels ({width * height / 1e6:.0f} MP); the limit is "
                    f"{max_pixels / 1e6:g} MP (infosam serve --max-pixels): downscale it first"
                )
        # the package's one reader: EXIF orientation applied (a phone photo upright, as infosam predict sees it),
        # grayscale and palette images expanded to RGB
        return read_image(path)[0]
    except UploadError:
        raise
    except UnidentifiedImageError as err:
        raise UploadError(f"{name} is not an image PIL can read (PNG, JPEG, BMP, TIFF, WebP, ...)") from err
    except (OSError, Image.DecompressionBombError, ValueError) as err:
        detail = str(err).replace(str(path), name)  # never show the server's temporary path
        raise UploadError(f"{name} is not a readable image: {detail}") from err
