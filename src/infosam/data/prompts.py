"""Prompts for SAM drawn from ground-truth masks, with explicit randomness.

Coordinates are in pixels of the padded ``S x S`` model input (the resized image sits in its top-left
``h x w`` corner): boxes ``(B, 4)`` as ``x0, y0, x1, y1`` with inclusive pixel indices (SAM's prompt encoder adds
the half-pixel itself), points ``(B, N, 2)`` as ``x, y`` with labels ``(B, N)``: 1 foreground, 0 background,
-1 padding (SAM's "not a point", ignored by the prompt encoder).

Rules:

* **Noisy box**: the mask's tight box, perturbed by one of three rules (:data:`BOX_NOISE_RULES`), then clipped to
  the image (``[0, w-1] x [0, h-1]`` of the resized image; padding is never inside a box) and ordered so that
  ``x0 <= x1`` and ``y0 <= y1``:

  - ``per-coordinate`` (this project's first rule, an option kept for the runs that used it): each of the four
    coordinates moves by its own random integer offset, uniform in ``[-max_shift, max_shift]`` px of the model
    input (``max_shift`` 5), so the box may grow, shrink or slide;
  - ``release`` (the paper's release, ``get_single_box_from_mask``; the default, :data:`DEFAULT_BOX_NOISE`): both corners move by one shared shift
    ``(dx, dy)``, so the box keeps its size. Its limit is set in the release's 1024-px frame,
    ``m = min(max_shift, int(0.5 * min(box_w, box_h)))`` with ``max_shift`` 5 and the box measured there
    (``box_w = x1 - x0`` scaled by ``1024 / S``); ``dx`` and ``dy`` are integers uniform in ``[-m, m - 1]`` (NumPy's
    ``randint(-m, m)``, high end excluded, as in the release), converted back to model-input pixels (times
    ``S / 1024``: at most 1.25 px at LiteMedSAM's 256). ``m = 0`` (a box under 2 px at 1024) gives no shift, where
    the release would fail. Unlike the release (which clips at 0 only) the box is also clipped at the image's far
    edges;
  - ``none``: the tight box. (:func:`infosam.evaluate.evaluate` takes it from the ground truth at its original
    resolution, mapped to the input as a user's box is, the box of the README's zero-shot table; training and
    :func:`eval_prompts` from the resized mask, which can be a pixel off.)
* **Points**: foreground points are uniform over mask pixels, background points uniform over the non-mask pixels
  of the image (padding excluded), drawn with replacement (duplicates are possible but rare and harmless).
* **Empty masks** (nothing to prompt): the box is the whole image ``(0, 0, w-1, h-1)`` without noise, and the
  foreground points become padding points (label -1, coordinates 0). A mask covering the whole image likewise
  turns its background points into padding. Training refuses empty masks earlier (:mod:`infosam.data.check`).
* **Training mix**: per batch, one draw decides: with probability ``p_box`` (0.5) every image gets a noisy box,
  otherwise every image gets one random foreground point. ``train.prompt: box`` sets ``p_box`` to 1 (boxes only,
  for box-trained models such as LiteMedSAM); the draw still happens, so the random stream is the same.
* **Test prompts are deterministic per image**: each image's prompt comes from its own CPU generator seeded by
  SHA-256 of ``"<seed>:<id>"``, so it does not depend on batch composition, order or the number of processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

BOX_NOISE_RULES = ("per-coordinate", "release", "none")
"""How a noisy box is drawn from the tight box (module doc)."""

DEFAULT_BOX_NOISE = "release"
"""The rule of training and evaluation when none is named: the paper release's, so scores compare with the
paper's (``per-coordinate`` moves each corner by up to 5 px of the model input: at 256 px about four times the
release's relative noise, and the box changes size)."""

RELEASE_FRAME = 1024
"""Input side at which the release's box-noise rule is defined (SAM ViT's input)."""

PROMPT_KINDS = ("tight_box", "noisy_box", "points")
"""What a test prompt is, as evaluation summaries name it: the tight box (``box_noise: none``), a noisy box (its
rule and scale in :func:`describe_prompt`) or points."""

PROMPT_MODES = ("box", "points")
"""Test prompt modes: a noisy box, or foreground + background points."""

TRAIN_PROMPT_MODES = {"mixed": 0.5, "box": 1.0}
"""Training prompt modes and their probability of a box batch: the paper's 50/50 mix of noisy boxes and one
foreground point, or noisy boxes only."""


def _valid_region(masks: Tensor, input_sizes: Tensor | None) -> Tensor:
    """``(B, 2)`` int64 ``(h, w)`` of each image's unpadded region (the whole mask when not given)."""
    b, _, s_h, s_w = masks.shape
    if input_sizes is None:
        return torch.tensor([[s_h, s_w]] * b, dtype=torch.int64)
    return torch.as_tensor(input_sizes, dtype=torch.int64).reshape(b, 2).cpu()


def _uniform_index(n: int, k: int, generator: torch.Generator) -> Tensor:
    """``k`` indices uniform in ``[0, n)`` drawn from ``generator`` (any device), returned on the CPU."""
    u = torch.rand(k, generator=generator, device=generator.device, dtype=torch.float64).cpu()
    return (u * n).long().clamp_(max=n - 1)


def tight_box(mask: Tensor | np.ndarray) -> Tensor | None:
    """``(4,)`` float32 ``x0, y0, x1, y1`` (inclusive pixel indices) of the foreground (``> 0.5``) of an ``(H, W)``
    mask (tensor or array, bool, {0, 1} or 0/255); None when it has no foreground pixel. The one tight-box rule
    of the package (training, evaluation and prediction prompts)."""
    mask = mask if isinstance(mask, Tensor) else torch.from_numpy(np.array(mask))
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if ys.numel() == 0:
        return None
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


def check_box_noise(rule: str) -> None:
    """ValueError naming the valid rules unless ``rule`` is one of :data:`BOX_NOISE_RULES`."""
    if rule not in BOX_NOISE_RULES:
        raise ValueError(f"box noise rule {rule!r} is not one of {list(BOX_NOISE_RULES)}")


def _release_shift(box: Tensor, u: Tensor, side: int, max_shift: int) -> Tensor:
    """The release's shared corner shift (module doc) for a tight ``box`` in an S x S input, from two uniforms
    ``u`` in [0, 1): ``(4,)`` float32 ``dx, dy, dx, dy`` in input pixels."""
    scale = RELEASE_FRAME / side
    shorter = float(min(box[2] - box[0], box[3] - box[1])) * scale
    limit = min(
        max_shift, int(shorter * 0.1 * 5)
    )  # the release's min(max_pixel, int(noise_std * 5)), std 0.1
    if limit <= 0:
        return torch.zeros(4)
    k = (u * (2 * limit)).floor() - limit  # uniform integers in [-limit, limit - 1]
    dx, dy = (k / scale).float().tolist()
    return torch.tensor([dx, dy, dx, dy])


def prompt_kind(prompt: str, box_noise: str = DEFAULT_BOX_NOISE) -> str:
    """One of :data:`PROMPT_KINDS` for a test prompt mode and box-noise rule."""
    if prompt == "points":
        return "points"
    check_box_noise(box_noise)
    return "tight_box" if box_noise == "none" else "noisy_box"


def describe_prompt(
    prompt: str,
    box_noise: str = DEFAULT_BOX_NOISE,
    *,
    n_fg: int = 2,
    n_bg: int = 3,
    image_size: int | None = None,
    max_shift: int = 5,
) -> str:
    """A test prompt in words, with its rule and scale, e.g. ``"noisy_box (per-coordinate: each box coordinate
    moved independently by up to 5 px of the 256-px model input)"``; ``image_size`` is the model input's side."""
    kind = prompt_kind(prompt, box_noise)
    if kind == "points":
        return (
            f"points ({n_fg} foreground + {n_bg} background, uniform over the mask and the rest of the image)"
        )
    if kind == "tight_box":
        return "tight_box (the box around the ground-truth mask, no noise)"
    frame = f"the {image_size}-px model input" if image_size else "the model input"
    if box_noise == "per-coordinate":
        return f"noisy_box (per-coordinate: each box coordinate moved independently by up to {max_shift} px of {frame})"
    at_input = "" if not image_size else f", <= {max_shift * image_size / RELEASE_FRAME:g} px at {image_size}"
    return (
        f"noisy_box (release: both corners moved by one shared shift below min({max_shift} px, half the shorter "
        f"side) at {RELEASE_FRAME} px, scaled to {frame}{at_input})"
    )


def noisy_box(
    masks: Tensor,
    generator: torch.Generator,
    *,
    max_shift: int = 5,
    input_sizes: Tensor | None = None,
    rule: str = DEFAULT_BOX_NOISE,
) -> Tensor:
    """Noisy boxes of a batch of masks (rules in the module doc).

    Args:
        masks: ``(B, 1, S, S)`` {0, 1}.
        generator: source of the offsets (per image 4 integers for ``per-coordinate``, 2 uniforms for
            ``release``, nothing for ``none``; always drawn, even for empty masks, so the stream does not depend
            on the data).
        max_shift: largest offset: in model-input pixels for ``per-coordinate`` (0 gives the tight box), in the
            release's 1024-px frame for ``release``.
        input_sizes: ``(B, 2)`` ``(h, w)`` valid region of each image, used for clipping (default: S x S).
        rule: one of :data:`BOX_NOISE_RULES`.

    Returns:
        ``(B, 4)`` float32 on the masks' device.
    """
    check_box_noise(rule)
    region = _valid_region(masks, input_sizes)
    side = masks.shape[-1]
    boxes = []
    for i in range(masks.shape[0]):
        if rule == "per-coordinate":
            draw = torch.randint(
                -max_shift, max_shift + 1, (4,), generator=generator, device=generator.device
            ).cpu()
        elif rule == "release":
            draw = torch.rand(2, generator=generator, device=generator.device, dtype=torch.float64).cpu()
        h, w = int(region[i, 0]), int(region[i, 1])
        box = tight_box(masks[i, 0].cpu())
        if box is None:
            boxes.append(torch.tensor([0.0, 0.0, w - 1.0, h - 1.0]))
            continue
        if rule == "per-coordinate":
            box = box + draw.float()
        elif rule == "release":
            box = box + _release_shift(box, draw, side, max_shift)
        x = box[[0, 2]].clamp(0, w - 1).sort().values
        y = box[[1, 3]].clamp(0, h - 1).sort().values
        boxes.append(torch.stack([x[0], y[0], x[1], y[1]]))
    return torch.stack(boxes).to(masks.device)


def random_points(
    masks: Tensor,
    n_fg: int,
    n_bg: int,
    generator: torch.Generator,
    *,
    input_sizes: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``n_fg`` foreground then ``n_bg`` background points per image (rules in the module doc).

    Args:
        masks: ``(B, 1, S, S)`` {0, 1}.
        input_sizes: ``(B, 2)`` valid region; background points are never drawn from the padding.

    Returns:
        ``points`` ``(B, n_fg + n_bg, 2)`` float32 xy and ``point_labels`` ``(B, n_fg + n_bg)`` int64 on the
        masks' device.
    """
    region = _valid_region(masks, input_sizes)
    all_points, all_labels = [], []
    for i in range(masks.shape[0]):
        h, w = int(region[i, 0]), int(region[i, 1])
        inside = masks[i, 0, :h, :w].cpu() > 0.5
        pts, lbl = [], []
        for want, label, where in ((n_fg, 1, inside), (n_bg, 0, ~inside)):
            if want == 0:
                continue
            ys, xs = torch.nonzero(where, as_tuple=True)
            # Always draw, so an image's stream does not depend on whether a part is empty.
            if ys.numel() == 0:
                _uniform_index(1, want, generator)
                pts.append(torch.zeros(want, 2))
                lbl.append(torch.full((want,), -1, dtype=torch.int64))
                continue
            idx = _uniform_index(ys.numel(), want, generator)
            pts.append(torch.stack([xs[idx], ys[idx]], dim=1).float())
            lbl.append(torch.full((want,), label, dtype=torch.int64))
        all_points.append(torch.cat(pts) if pts else torch.zeros(0, 2))
        all_labels.append(torch.cat(lbl) if lbl else torch.zeros(0, dtype=torch.int64))
    return torch.stack(all_points).to(masks.device), torch.stack(all_labels).to(masks.device)


def train_prompts(
    masks: Tensor,
    generator: torch.Generator,
    *,
    p_box: float = 0.5,
    max_shift: int = 5,
    input_sizes: Tensor | None = None,
    box_noise: str = DEFAULT_BOX_NOISE,
) -> dict[str, Tensor]:
    """The paper's training prompts for one batch: noisy boxes (``box_noise`` rule) with probability ``p_box``,
    else one fg point each.

    Returns:
        ``{"boxes": (B, 4)}`` or ``{"points": (B, 1, 2), "point_labels": (B, 1)}``.
    """
    use_box = bool(torch.rand(1, generator=generator, device=generator.device).item() < p_box)
    if use_box:
        boxes = noisy_box(masks, generator, max_shift=max_shift, input_sizes=input_sizes, rule=box_noise)
        return {"boxes": boxes}
    points, labels = random_points(masks, 1, 0, generator, input_sizes=input_sizes)
    return {"points": points, "point_labels": labels}


def prompt_generator(seed: int, image_id: str) -> torch.Generator:
    """CPU generator seeded by SHA-256 of ``"<seed>:<image_id>"`` (same prompt for an image in any batch/process)."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    g = torch.Generator()
    g.manual_seed(int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def eval_prompts(
    masks: Tensor,
    ids: Sequence[str],
    *,
    seed: int = 42,
    mode: str = "box",
    n_fg: int = 2,
    n_bg: int = 3,
    max_shift: int = 5,
    input_sizes: Tensor | None = None,
    box_noise: str = DEFAULT_BOX_NOISE,
) -> dict[str, Tensor]:
    """Deterministic evaluation prompts: ``mode="box"`` a box (``box_noise`` rule; ``none``: the tight box),
    ``"points"`` ``n_fg`` + ``n_bg`` points.

    Args:
        masks: ``(B, 1, S, S)``; ids: the B image ids (``sample["id"]``); input_sizes: ``(B, 2)``.

    Returns:
        ``{"boxes": (B, 4)}`` or ``{"points": (B, n_fg + n_bg, 2), "point_labels": (B, n_fg + n_bg)}``.
    """
    if mode not in PROMPT_MODES:
        raise ValueError(f"prompt mode {mode!r} is not one of {list(PROMPT_MODES)}")
    if len(ids) != masks.shape[0]:
        raise ValueError(f"got {len(ids)} ids for {masks.shape[0]} masks")
    region = _valid_region(masks, input_sizes)
    outs = []
    for i, image_id in enumerate(ids):
        g = prompt_generator(seed, image_id)
        m = masks[i : i + 1]
        if mode == "box":
            outs.append(noisy_box(m, g, max_shift=max_shift, input_sizes=region[i : i + 1], rule=box_noise))
        else:
            outs.append(random_points(m, n_fg, n_bg, g, input_sizes=region[i : i + 1]))
    if mode == "box":
        return {"boxes": torch.cat(outs)}
    return {"points": torch.cat([p for p, _ in outs]), "point_labels": torch.cat([lb for _, lb in outs])}
