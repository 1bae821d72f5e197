"""What the page does, without Gradio: the prompt being clicked (:class:`Clicks`), one browser tab's state
(:class:`Session`) and the handlers (:class:`App`), whose answers are plain arrays, text and files."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..files import atomic_save_image
from ..predict.draw import overlay
from ..predict.prompts import Prompt
from .segmenter import Result, Segmenter
from .upload import MAX_PIXELS, UploadError, read_upload

MODES = ("box (click two corners)", "foreground point", "background point")


# --------------------------------------------------------------------------------------------- prompt state


@dataclass
class Clicks:
    """The prompt being drawn on one image: a finished box, a pending first corner, points."""

    box: tuple[float, float, float, float] | None = None
    corner: tuple[float, float] | None = None
    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add(self, x: float, y: float, mode: str) -> None:
        """Record a click at pixel (x, y): a box corner (the second one closes the box) or a point."""
        if mode == MODES[0]:
            if self.corner is None:
                self.corner = (x, y)
            else:
                (x0, y0), self.corner = self.corner, None
                box = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
                self.box = box if box[0] < box[2] and box[1] < box[3] else None
        elif mode in MODES[1:]:
            self.points.append((x, y))
            self.labels.append(1 if mode == MODES[1] else 0)
        else:
            raise ValueError(f"unknown click mode {mode!r}; valid: {', '.join(MODES)}")

    def prompt(self) -> Prompt | None:
        """The prompt so far, or ``None`` while there is neither a box nor a point."""
        if self.box is None and not self.points:
            return None
        return Prompt(box=self.box, points=tuple(self.points), labels=tuple(self.labels))


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0 y0 x1 y1"`` (spaces or commas) -> a box; ValueError saying what was expected."""
    parts = text.replace(",", " ").split()
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise ValueError(f"box must be four numbers x0 y0 x1 y1 with x0 < x1 and y0 < y1; got {text!r}")
    return values  # type: ignore[return-value]


def draw_prompt(image: np.ndarray, clicks: Clicks) -> np.ndarray:
    """The image with the prompt drawn (box, points, a pending first corner as a point) and no mask."""
    points = [*clicks.points, *([clicks.corner] if clicks.corner else [])]
    labels = [*clicks.labels, *([1] if clicks.corner else [])]
    if clicks.box is None and not points:
        return image
    shown = Prompt(box=clicks.box, points=tuple(points), labels=tuple(labels))
    return np.asarray(overlay(image, np.zeros(image.shape[:2], dtype=bool), shown))


def render(image: np.ndarray, results: list[Result], prompt: Prompt) -> list[np.ndarray]:
    """Per result, the image with its mask tinted and the prompt drawn, (H, W, 3) uint8."""
    return [np.asarray(overlay(image, r.mask, prompt)) for r in results]


def scores_markdown(results: list[Result]) -> str:
    """One line per model: its predicted IoU and mask area."""
    return "\n".join(
        f"- **{r.name}**: predicted IoU {r.iou:.3f}, mask {int(r.mask.sum())} px ({100 * r.mask.mean():.1f}%)"
        for r in results
    )


def save_mask(mask: np.ndarray, folder: Path, stem: str) -> Path:
    """Write ``mask`` (H, W) bool as a 0/255 PNG ``folder/<stem>.png`` and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.png"
    atomic_save_image(path, Image.fromarray(mask.astype(np.uint8) * 255))
    return path


# --------------------------------------------------------------------------------------------- the page


@dataclass
class Session:
    """What one browser tab holds: the uploaded image and the prompt drawn on it."""

    image: np.ndarray | None = None
    name: str = "image"
    clicks: Clicks = field(default_factory=Clicks)
    scale: int = 1
    """Small images are shown enlarged by this integer factor; clicks are divided by it."""


DISPLAY_SIDE = 512
"""Images whose longest side is below this are shown enlarged (nearest neighbour) to about this size."""


def display_scale(shape: tuple[int, ...]) -> int:
    """Integer enlargement for showing an (H, W, ...) image: 1 unless its longest side is below DISPLAY_SIDE."""
    return max(1, DISPLAY_SIDE // max(shape[0], shape[1]))


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, 3) -> (scale H, scale W, 3) by pixel repetition."""
    return image if scale == 1 else image.repeat(scale, axis=0).repeat(scale, axis=1)


class App:
    """Handlers of the page as plain methods (the Gradio layer only routes events to them).

    Every handler returns the new :class:`Session` plus what the page shows; a bad input never raises: it comes
    back as the status line, and the server keeps serving.
    """

    def __init__(
        self, segmenter: Segmenter, *, max_pixels: int = MAX_PIXELS, mask_dir: Path | None = None
    ) -> None:
        self.segmenter = segmenter
        self.max_pixels = max_pixels
        self.mask_dir = mask_dir or Path(tempfile.mkdtemp(prefix="infosam-serve-"))
        self._count = 0

    def upload(self, path: str | None) -> tuple:
        """A new image: read it, encode it (cached), show it ready for clicks; same returns as :meth:`click`."""
        if path is None:
            return self._empty(Session(), "Upload an image to start.")
        try:
            image = read_upload(path, max_pixels=self.max_pixels)
        except UploadError as err:
            return self._empty(Session(), f"**Upload refused:** {err}")
        self.segmenter.encode(image)
        session = Session(image=image, name=Path(path).stem, scale=display_scale(image.shape))
        height, width = image.shape[:2]
        status = f"{session.name}: {width} x {height} pixels. Click two corners of a box, or points."
        return self._empty(session, status, keep_canvas=True)

    def click(self, session: Session, x: float, y: float, mode: str) -> tuple:
        """A click at image pixel (x, y). Returns (session, canvas, *overlays, scores, mask file, status)."""
        if session.image is None:
            return self._empty(session, "Upload an image first.")
        session.clicks.add(float(x) / session.scale, float(y) / session.scale, mode)
        return self._show(session)

    def set_box(self, session: Session, text: str) -> tuple:
        """A box typed as ``x0 y0 x1 y1`` replaces the drawn box; same returns as :meth:`click`."""
        if session.image is None:
            return self._empty(session, "Upload an image first.")
        try:
            box = parse_box(text)
            Prompt(box=box).check_inside(session.image.shape[1], session.image.shape[0], session.name)
        except ValueError as err:
            return self._empty(session, f"**Box refused:** {err}", keep_canvas=True)
        session.clicks.box, session.clicks.corner = box, None
        return self._show(session)

    def clear(self, session: Session) -> tuple:
        """Forget the prompt (the image and its embeddings stay)."""
        session.clicks = Clicks()
        return self._empty(session, "Prompt cleared.", keep_canvas=True)

    def _show(self, session: Session) -> tuple:
        image, clicks = session.image, session.clicks
        canvas = enlarge(draw_prompt(image, clicks), session.scale)
        prompt = clicks.prompt()
        if prompt is None:
            return self._empty(session, "First corner set: click the opposite corner.", keep_canvas=True)
        results = self.segmenter.segment(image, prompt)
        self._count += 1
        mask_file = save_mask(results[0].mask, self.mask_dir / f"{self._count:05d}", f"{session.name}-mask")
        overlays = [enlarge(view, session.scale) for view in render(image, results, prompt)]
        overlays += [None] * (len(self.segmenter.models) - len(overlays))
        return (session, canvas, *overlays, scores_markdown(results), str(mask_file), "Done.")

    def _empty(self, session: Session, status: str, *, keep_canvas: bool = False) -> tuple:
        canvas = None
        if keep_canvas and session.image is not None:
            canvas = enlarge(draw_prompt(session.image, session.clicks), session.scale)
        nones = [None] * len(self.segmenter.models)
        return (session, canvas, *nones, "", None, status)
