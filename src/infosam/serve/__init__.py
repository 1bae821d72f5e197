"""``infosam serve``: a local web page to try a fine-tuned student next to the zero-shot teacher.

Upload an image, draw a box (two clicks: opposite corners) or click foreground/background points; the page shows
each model's mask over the image with its predicted IoU, side by side, and offers the student's mask as a PNG.

The app logic lives in plain functions and the :class:`Segmenter` (testable without a browser); only
:func:`build_app` knows Gradio. Each uploaded image is encoded once per model and its embeddings are cached
(least recently used, a few images), so a click costs one prompt-encoder + mask-decoder call per model.

Modules: :mod:`.upload` (checking an uploaded file), :mod:`.segmenter` (the models and their embedding cache),
:mod:`.app` (the page's state and handlers as plain functions), :mod:`.page` (the Gradio layout); the models a
source gives (:func:`load_models`) and the server (:func:`serve`) are here, and the other modules' public names
are re-exported.
"""

from __future__ import annotations

from pathlib import Path

from segment_anything.modeling import Sam

from .app import (
    MODES,
    App,
    Clicks,
    Session,
    display_scale,
    draw_prompt,
    enlarge,
    parse_box,
    render,
    save_mask,
    scores_markdown,
)
from .page import build_app
from .segmenter import Result, Segmenter
from .upload import MAX_BYTES, MAX_PIXELS, UploadError, read_upload

STUDENT, TEACHER = "fine-tuned student", "zero-shot teacher"


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
    from ..load import open_model

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

    from ..extras import require

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


__all__ = [
    "MAX_BYTES",
    "MAX_PIXELS",
    "MODES",
    "STUDENT",
    "TEACHER",
    "App",
    "Clicks",
    "Result",
    "Segmenter",
    "Session",
    "UploadError",
    "build_app",
    "display_scale",
    "draw_prompt",
    "enlarge",
    "load_models",
    "parse_box",
    "read_upload",
    "render",
    "save_mask",
    "scores_markdown",
    "serve",
]
