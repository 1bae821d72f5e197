"""``infosam serve``: a local web page to try a fine-tuned student next to the zero-shot teacher.

Upload an image, draw a box (two clicks: opposite corners) or click foreground/background points; the page shows
each model's mask over the image with its predicted IoU, side by side, and offers the student's mask as a PNG.

The app logic lives in plain functions and the :class:`Segmenter` (testable without a browser); only
:func:`build_app` knows Gradio. Each uploaded image is encoded once per model and its embeddings are cached
(least recently used, a few images), so a click costs one prompt-encoder + mask-decoder call per model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from segment_anything.modeling import Sam

from .data.reading import read_image
from .files import atomic_save_image
from .predict import EncodedImage, Prompt, decode_prompt, encode_image, overlay

MAX_PIXELS = 40_000_000
"""Default upper bound on an uploaded image's width x height (decoding is refused above it)."""
MAX_BYTES = 100 * 1024 * 1024
"""Upper bound on an uploaded file's size."""
MODES = ("box (click two corners)", "foreground point", "background point")
STUDENT, TEACHER = "fine-tuned student", "zero-shot teacher"


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


@dataclass
class Result:
    """One model's answer to one prompt."""

    name: str
    logits: np.ndarray
    """(H, W) float32 logits at the original image size."""
    iou: float
    """The model's predicted IoU of its mask."""

    @property
    def mask(self) -> np.ndarray:
        """(H, W) bool: probability above 0.5."""
        return self.logits > 0


class Segmenter:
    """The models to compare (name -> SAM, eval mode) and a small cache of image embeddings per model.

    Args:
        models: e.g. ``{"fine-tuned student": student, "zero-shot teacher": teacher}``; shown in this order.
        cache_size: how many images' embeddings to keep.
    """

    def __init__(self, models: dict[str, Sam], *, cache_size: int = 4) -> None:
        if not models:
            raise ValueError("Segmenter needs at least one model")
        self.models = dict(models)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, EncodedImage]] = OrderedDict()
        self.encoder_calls = 0
        """How many image-encoder runs happened (one per model per new image)."""

    def encode(self, image: np.ndarray) -> str:
        """Encode ``image`` (H, W, 3) uint8 with every model unless cached; returns its cache key."""
        key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()
        if key in self._cache:
            self._cache.move_to_end(key)
            return key
        encoded = {}
        for name, model in self.models.items():
            encoded[name] = encode_image(model, image)
            self.encoder_calls += 1
        self._cache[key] = encoded
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return key

    def segment(self, image: np.ndarray, prompt: Prompt) -> list[Result]:
        """Every model's single mask for ``prompt`` (original pixels) on ``image``; encodes only a new image."""
        key = self.encode(image)
        return [
            Result(name, *decode_prompt(model, self._cache[key][name], prompt))
            for name, model in self.models.items()
        ]


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


def build_app(app: App, *, title: str = "InfoSAM"):
    """The Gradio page around ``app`` (imports gradio only here)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .extras import require

    gr = require("gradio", "infosam serve")

    names = list(app.segmenter.models)
    with gr.Blocks(title=title) as page:
        gr.Markdown(f"# {title}\nUpload an image, then click two corners of a box (or points) on it.")
        session = gr.State(Session())
        with gr.Row():
            with gr.Column(scale=1):
                # No file_types filter: every upload reaches read_upload, which says in one line what is wrong with it.
                upload = gr.File(label="Image file", type="filepath", elem_id="upload")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Clicks add", elem_id="mode")
                box_text = gr.Textbox(label="or type a box: x0 y0 x1 y1", elem_id="box-text")
                clear = gr.Button("Clear prompt", elem_id="clear")
                status = gr.Markdown("Upload an image to start.", elem_id="status")
            with gr.Column(scale=2):
                canvas = gr.Image(
                    label="Click on the image",
                    type="numpy",
                    interactive=False,
                    format="png",
                    elem_id="canvas",
                )
        with gr.Row():
            views = [
                gr.Image(
                    label=name, type="numpy", interactive=False, format="png", height=360, elem_id=f"out-{i}"
                )
                for i, name in enumerate(names)
            ]
        scores = gr.Markdown(elem_id="scores")
        mask_file = gr.File(label=f"{names[0]} mask (PNG)", interactive=False, elem_id="mask-file")

        outputs = [session, canvas, *views, scores, mask_file, status]
        # The file box is emptied after every upload (the image moves to the canvas), so the next one, after a
        # refused file too, can be dropped straight away; `.upload` fires on user uploads only, not on that reset.
        upload.upload(lambda path: (*app.upload(path), None), inputs=upload, outputs=[*outputs, upload])

        def on_select(s, m, evt):
            x, y = evt.index  # pixel of the original image (Gradio maps the displayed click back)
            return app.click(s, x, y, m)

        # Gradio injects the click by the annotation's class; this module's annotations are strings.
        on_select.__annotations__ = {"evt": gr.SelectData}

        canvas.select(on_select, inputs=[session, mode], outputs=outputs)
        box_text.submit(app.set_box, inputs=[session, box_text], outputs=outputs)
        clear.click(app.clear, inputs=session, outputs=outputs)
    return page


def load_models(
    source: str | Path | None = None,
    *,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Sam]:
    """The models the page compares, by display name.

    - a run folder or a self-contained export (``infosam export --format infosam``): the fine-tuned student and
      the zero-shot teacher it was trained from;
    - a plain SAM state dict (official or ``--format sam``): that model alone;
    - no ``source`` but ``model`` + ``checkpoint``: zero-shot SAM ``model`` alone.

    Every source goes through :func:`infosam.load.open_model`; ``checkpoint`` with a run folder replaces the base
    SAM's path its config records.
    """
    from .load import open_model

    if (source is None) == (model is None):
        raise ValueError("give a run folder / exported file, or --model with --checkpoint (not both)")
    if model is not None:
        if checkpoint is None:
            raise ValueError("--model needs --checkpoint (the pretrained weights)")
        return {f"zero-shot {model}": open_model(model, checkpoint=checkpoint, device=device).model}
    source = Path(source).expanduser()
    if not source.exists():
        raise FileNotFoundError(f"model {source} does not exist (expected a run folder or an exported file)")
    opened = open_model(source, checkpoint=checkpoint, device=device, teacher=True)
    if opened.is_student:
        return {STUDENT: opened.model, TEACHER: opened.teacher}
    return {f"{source.name}": opened.model}


def serve(
    source: str | Path | None = None,
    *,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    max_pixels: int = MAX_PIXELS,
    device: str = "cpu",
    share: bool = False,
    report=print,
) -> None:
    """Load the models (:func:`load_models`) and serve the page on ``host:port`` until interrupted (``port`` 0:
    a free port); ``share`` also opens Gradio's public link (Gradio prints it). ``report`` receives the one line
    that says where."""
    import socket

    from .extras import require

    require("gradio", "infosam serve")  # before the models load: a missing extra is said at once
    models = load_models(source, model=model, checkpoint=checkpoint, device=device)
    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    title = f"InfoSAM: {Path(source).name if source is not None else model}"
    page = build_app(App(Segmenter(models), max_pixels=int(max_pixels)), title=title)
    public = "; a public link follows" if share else ""
    report(f"serving {', '.join(models)} at http://{host}:{port}{public} (Ctrl+C stops)")
    # quiet: our line above says where; Gradio's own would add "set share=True in launch()", which the command
    # offers as --share instead.
    page.launch(server_name=host, server_port=port, show_error=True, share=share, quiet=True)
