"""Reading one image or mask file: the one reader behind datasets, prediction, evaluation and the demo.

Rules (the same for training, evaluation, ``infosam predict``, the demo and ``infosam data check``):

* **Images** become ``(H, W, 3)`` uint8 RGB, upright: the EXIF orientation is applied
  (``PIL.ImageOps.exif_transpose``). Grayscale is repeated to three channels, palette images are expanded,
  alpha is dropped (RGBA -> RGB, no compositing), 16-bit images are scaled to 8 bits
  (``round(v * 255 / 65535)``), CMYK is converted by PIL.
* **Masks** are turned to grayscale (colour masks by PIL's luminance ``L = 0.299 R + 0.587 G + 0.114 B``,
  alpha ignored) and binarised: if the largest grey level is 1 the mask is a 0/1 mask and foreground is
  ``value == 1``; otherwise foreground is ``value > max_level / 2`` with ``max_level`` the largest level the file
  can hold (255 for 8-bit, 65535 for 16-bit). 0/255 PNGs, 0/1 PNGs and JPEG-compressed masks all work.
* **Mask orientation.** A mask with its own EXIF orientation is turned by it. A mask without one is assumed to
  be drawn on the image's stored pixels, so the image's orientation is applied to it as well, which keeps
  image and mask aligned whatever the viewer did. One exception: when the image's orientation swaps width and
  height and the mask already has the image's upright size (and not its stored size), the mask was evidently
  drawn on the upright image and is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
"""File suffixes (lower case) read as images or masks wherever a folder is listed."""
EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 include a 90 degree turn: width and height swap.
_SWAPS_AXES = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageReadError(ValueError):
    """An image or mask file that cannot be read (missing, truncated, not an image, unsupported mode)."""


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: stored size ``(width, height)``, EXIF orientation (1 = upright) and PIL mode."""

    stored_size: tuple[int, int]
    orientation: int
    mode: str

    @property
    def upright_size(self) -> tuple[int, int]:
        """``(width, height)`` after applying the orientation."""
        w, h = self.stored_size
        return (h, w) if self.orientation in _SWAPS_AXES else (w, h)


def open_image(path: str | Path) -> tuple[Image.Image, ImageInfo]:
    """Open ``path`` lazily (header only) and return the PIL image with its :class:`ImageInfo`."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        img = Image.open(path)
        orientation = int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except (OSError, SyntaxError, ValueError) as err:  # PIL raises these for non-images and bad headers
        raise ImageReadError(f"{path}: not a readable image ({err})") from err
    if orientation not in range(1, 9):
        orientation = 1
    return img, ImageInfo(stored_size=img.size, orientation=orientation, mode=img.mode)


def load_pixels(img: Image.Image, path: str | Path) -> None:
    """Decode all pixel data, turning PIL's errors (truncated file, corrupt data) into :class:`ImageReadError`."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: unreadable or truncated image ({err})") from err


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB from any PIL mode (see the module rules)."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "F":
        gray = _scaled_to_uint8(img)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def to_gray(img: Image.Image) -> tuple[np.ndarray, int]:
    """Grey levels ``(H, W)`` and the largest level the file can hold (255, or 65535 for 16-bit files)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img, dtype=np.int64), 65535
    if img.mode == "1":
        return np.asarray(img, dtype=np.uint8), 1
    if img.mode == "F":
        raise ImageReadError("floating-point masks are not supported; save masks as 8-bit PNG (0/255 or 0/1)")
    if img.mode != "L":
        img = img.convert("L")
    return np.asarray(img, dtype=np.uint8), 255


def binarize(gray: np.ndarray, max_level: int) -> np.ndarray:
    """Foreground of a grey mask: ``gray == 1`` for 0/1 masks (max value 1), else ``gray > max_level / 2``."""
    if gray.size and int(gray.max()) == 1:
        return gray == 1
    return gray > max_level / 2


def orient_mask(mask_img: Image.Image, mask_info: ImageInfo, image_info: ImageInfo) -> Image.Image:
    """Turn a decoded mask upright following the module's orientation rule."""
    if mask_info.orientation != 1:
        return ImageOps.exif_transpose(mask_img)
    o = image_info.orientation
    if o == 1:
        return mask_img
    if o in _SWAPS_AXES and mask_info.stored_size == image_info.upright_size != image_info.stored_size:
        return mask_img  # drawn on the upright image already
    return _transpose_for(mask_img, o)


def read_image(path: str | Path) -> tuple[np.ndarray, ImageInfo]:
    """``(H, W, 3)`` uint8 RGB upright image and its header info; :class:`ImageReadError` names the file."""
    img, info = open_image(path)
    load_pixels(img, path)
    return to_rgb_uint8(_transpose_for(img, info.orientation)), info


def read_mask(path: str | Path, image_info: ImageInfo | None = None) -> np.ndarray:
    """``(H, W)`` bool upright mask (foreground True), oriented like the image described by ``image_info``."""
    img, info = open_image(path)
    load_pixels(img, path)
    img = orient_mask(img, info, image_info or ImageInfo(info.stored_size, 1, info.mode))
    try:
        gray, max_level = to_gray(img)
    except ImageReadError as err:
        raise ImageReadError(f"{path}: {err}") from err
    return binarize(gray, max_level)


def _transpose_for(img: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return img if method is None else img.transpose(method)


def _scaled_to_uint8(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" else 65535.0
    return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
