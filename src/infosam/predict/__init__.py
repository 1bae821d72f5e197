"""Segment image files with a fine-tuned student (or zero-shot SAM) from prompts given in original pixels.

Prompts (a box, points, or a box taken from a mask file per image) are given in each image's ORIGINAL pixel
coordinates of the upright image; images and masks are read by :mod:`infosam.data.reading` (EXIF orientation
applied, masks binarised by its one rule) exactly as for training and evaluation, and the model's transform
(:func:`infosam.sam.transforms.get_transform`) maps image and prompt into its input frame and the logits back.
Masks come back at each image's original (upright) size.

Outputs, per image ``<stem>``: ``<out>/masks/<stem>.png`` (0/255) and ``<out>/overlays/<stem>.png`` (the image
with the mask tinted and the prompt drawn); per object ``<out>/masks/<stem>/<object id>.png`` and
``<out>/results.json``, and per image of those objects ``<out>/overlays/<stem>.png`` (every object's mask and box,
each in its own colour). Existing outputs are never overwritten unless asked; every file is written atomically.

Modules: :mod:`.prompts` (what to segment: prompts, image lists, prompts from masks, COCO files and box lists),
:mod:`.segment` (running a model on one image and prompt), :mod:`.draw` (overlays), :mod:`.outputs` (the output
checks both planners make), :mod:`.images` (one mask and overlay per image: plan, then write) and :mod:`.objects`
(one mask per object, an overlay per image and the COCO results file). Their public names are re-exported here.
"""

from .draw import overlay, overlay_objects
from .images import Prediction, plan_predictions, predict, predict_files, write_predictions
from .objects import (
    RESULTS_FILE,
    ObjectJob,
    plan_object_predictions,
    predict_objects,
    write_object_predictions,
)
from .prompts import (
    BOX_LIST_COLUMNS,
    Prompt,
    box_list_prompts,
    coco_object_prompts,
    list_images,
    mask_prompt,
)
from .segment import (
    EncodedImage,
    decode_prompt,
    encode_image,
    map_prompt,
    predict_logits,
    predict_probabilities,
    probability_to_logit,
)

__all__ = [
    "BOX_LIST_COLUMNS",
    "RESULTS_FILE",
    "EncodedImage",
    "ObjectJob",
    "Prediction",
    "Prompt",
    "box_list_prompts",
    "coco_object_prompts",
    "decode_prompt",
    "encode_image",
    "list_images",
    "map_prompt",
    "mask_prompt",
    "overlay",
    "overlay_objects",
    "plan_object_predictions",
    "plan_predictions",
    "predict",
    "predict_files",
    "predict_logits",
    "predict_objects",
    "predict_probabilities",
    "probability_to_logit",
    "write_object_predictions",
    "write_predictions",
]
