"""The Gradio page around an :class:`~infosam.serve.app.App`: layout and event routing only (imports gradio only
when built)."""

from __future__ import annotations

import os

from .app import MODES, App, Session


def build_app(app: App, *, title: str = "InfoSAM"):
    """The Gradio page around ``app`` (imports gradio only here)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from ..extras import require

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
