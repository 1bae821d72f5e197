"""Save docs/images/serve.png: the serve page on the demo's fine-tuned run, a box drawn, both masks shown.

    python -m infosam demo --out /tmp/demo          # a tiny teacher + fine-tuned student (about a minute)
    PYTHONPATH=src:tests python scripts/serve_screenshot.py /tmp/demo

Needs chromium + chromedriver (apt-get install -y chromium chromium-driver) and selenium (the dev extra).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from browser import chromium, click_box, served, settle, text, upload, wait_for, wait_for_masks  # noqa: E402
from infosam.serve import App, Segmenter, build_app, load_models  # noqa: E402


def box_fractions(image: Path, margin: float = 0.06) -> tuple[tuple[float, float], tuple[float, float]]:
    """Two box corners as fractions of the image: the same-stem mask's box grown by ``margin``, or most of it."""
    import numpy as np
    from PIL import Image

    from infosam.data.prompts import tight_box

    mask_path = image.parent.parent / "masks" / image.name
    if not mask_path.is_file():
        return (0.1, 0.1), (0.9, 0.9)
    mask = np.asarray(Image.open(mask_path).convert("L")) > 0
    h, w = mask.shape
    box = tight_box(mask)
    if box is None:  # an empty mask: most of the image
        return (0.1, 0.1), (0.9, 0.9)
    x0, y0, x1, y1 = box.tolist()
    clamp = lambda v: min(max(v, 0.01), 0.99)  # noqa: E731
    return (clamp(x0 / w - margin), clamp(y0 / h - margin)), (clamp(x1 / w + margin), clamp(y1 / h + margin))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("demo_out", type=Path, help="output folder of infosam demo")
    parser.add_argument(
        "--image", default="auto", help="image to upload (default: the first target test image)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "serve.png")
    args = parser.parse_args()
    image = (
        sorted((args.demo_out / "data" / "target" / "test" / "images").iterdir())[0]
        if args.image == "auto"
        else Path(args.image)
    )
    app = App(Segmenter(load_models(args.demo_out / "run")))
    with served(build_app(app, title="InfoSAM: demo run")) as url, chromium(1280, 1450) as driver:
        upload(driver, url, image)
        wait_for(driver, lambda d: "pixels" in text(d, "status"))
        click_box(driver, box_fractions(image))
        wait_for_masks(driver, len(app.segmenter.models))
        settle(1.0)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
