"""Prompt sampling: noisy boxes, points, the training mix, deterministic test prompts, empty masks."""

import pytest
import torch

from infosam.data import prompts


def masks_with_boxes(boxes, size=64):
    """(B, 1, size, size) masks with filled rectangles xyxy (inclusive)."""
    m = torch.zeros(len(boxes), 1, size, size)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, 0, y0 : y1 + 1, x0 : x1 + 1] = 1
    return m


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_tight_box_and_zero_shift():
    m = masks_with_boxes([(10, 20, 30, 40), (0, 0, 63, 5)])
    boxes = prompts.noisy_box(m, gen(), max_shift=0)
    assert boxes.shape == (2, 4) and boxes.dtype == torch.float32
    assert boxes.tolist() == [[10, 20, 30, 40], [0, 0, 63, 5]]


def test_noisy_box_offsets_are_bounded_integers_and_clipped():
    m = masks_with_boxes([(10, 20, 30, 40)] * 200 + [(0, 0, 40, 40)] * 50)
    sizes = torch.tensor([[64, 64]] * 200 + [[50, 45]] * 50)
    boxes = prompts.noisy_box(m, gen(), max_shift=5, input_sizes=sizes, rule="per-coordinate")
    shift = boxes[:200] - torch.tensor([10.0, 20, 30, 40])
    assert shift.abs().max() == 5 and (shift == shift.round()).all()
    assert len(shift.unique()) == 11  # every offset in [-5, 5] occurs
    assert not torch.equal(shift[:, 0], shift[:, 2])  # corners move independently
    assert (boxes[200:, [0, 1]] >= 0).all() and (boxes[200:, 2] <= 44).all() and (boxes[200:, 3] <= 49).all()
    assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()


def test_points_fall_inside_and_outside_the_mask_and_not_in_padding():
    m = masks_with_boxes([(5, 5, 9, 9)] * 20)
    sizes = torch.tensor([[32, 48]] * 20)
    pts, labels = prompts.random_points(m, 2, 3, gen(), input_sizes=sizes)
    assert pts.shape == (20, 5, 2) and labels.shape == (20, 5)
    assert labels[:, :2].eq(1).all() and labels[:, 2:].eq(0).all()
    x, y = pts[..., 0].long(), pts[..., 1].long()
    inside = m[torch.arange(20)[:, None], 0, y, x]
    assert inside[:, :2].eq(1).all() and inside[:, 2:].eq(0).all()
    assert (x < 48).all() and (y < 32).all()


def test_empty_and_full_masks():
    m = torch.zeros(1, 1, 64, 64)
    box = prompts.noisy_box(m, gen(), input_sizes=torch.tensor([[40, 64]]))
    assert box.tolist() == [[0, 0, 63, 39]]  # the whole image, no noise
    pts, labels = prompts.random_points(m, 1, 2, gen())
    assert labels.tolist() == [[-1, 0, 0]] and pts[0, 0].tolist() == [0, 0]
    full = torch.ones(1, 1, 64, 64)
    _, labels = prompts.random_points(full, 1, 2, gen())
    assert labels.tolist() == [[1, -1, -1]]


def test_train_prompts_mix_box_or_one_point_per_batch():
    m = masks_with_boxes([(10, 10, 20, 20)] * 3)
    g = gen(1)
    kinds = []
    for _ in range(200):
        p = prompts.train_prompts(m, g)
        if "boxes" in p:
            assert p["boxes"].shape == (3, 4)
        else:
            assert p["points"].shape == (3, 1, 2) and p["point_labels"].eq(1).all()
        kinds.append("boxes" in p)
    assert 70 < sum(kinds) < 130  # p = 0.5
    assert prompts.train_prompts(m, gen(), p_box=1.0).keys() == {"boxes"}


def test_eval_prompts_depend_only_on_seed_and_id():
    m = masks_with_boxes([(10, 10, 30, 30), (20, 5, 40, 25), (0, 0, 10, 10)])
    ids = ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    full = prompts.eval_prompts(m, ids, seed=42)["boxes"]
    # Same prompt when the image is alone, in another order, or evaluated twice.
    for i in range(3):
        assert torch.equal(prompts.eval_prompts(m[i : i + 1], ids[i : i + 1], seed=42)["boxes"][0], full[i])
    rev = prompts.eval_prompts(m.flip(0), ids[::-1], seed=42)["boxes"]
    assert torch.equal(rev.flip(0), full)
    assert not torch.equal(prompts.eval_prompts(m, ids, seed=43)["boxes"], full)
    p1 = prompts.eval_prompts(m, ids, seed=42, mode="points", n_fg=2, n_bg=3)
    p2 = prompts.eval_prompts(m[1:], ids[1:], seed=42, mode="points", n_fg=2, n_bg=3)
    assert torch.equal(p1["points"][1:], p2["points"]) and p1["point_labels"].shape == (3, 5)


def test_box_only_training_prompts_keep_the_mixed_random_stream():
    from infosam.step import batch_prompts

    batch = {
        "mask": masks_with_boxes([(10, 10, 20, 20), (30, 5, 50, 40)]),
        "input_size": torch.tensor([[64, 64]] * 2),
    }
    kinds = []
    for index in range(40):
        mixed = batch_prompts(batch, seed=3, rank=0, epoch=1, index=index)
        boxes = batch_prompts(batch, seed=3, rank=0, epoch=1, index=index, p_box=1.0)
        assert boxes.keys() == {"boxes"} and boxes["boxes"].shape == (2, 4)
        if "boxes" in mixed:  # the same draw, so the same noisy boxes where the mix chose boxes too
            torch.testing.assert_close(mixed["boxes"], boxes["boxes"], rtol=0, atol=0)
        kinds.append("boxes" in mixed)
    assert 0 < sum(kinds) < len(kinds)  # the mix drew both kinds over these batches


def test_release_rule_at_1024_is_one_shared_integer_shift_below_five_px():
    """The release's get_single_box_from_mask at 1024 px: m = min(5, int(0.5 * min(w, h))), dx, dy uniform
    integers in [-m, m - 1] (NumPy's randint), both corners moved alike (the box keeps its size)."""
    m = masks_with_boxes([(300, 400, 400, 450)] * 400, size=1024)  # w = 100, h = 50 -> m = 5
    boxes = prompts.noisy_box(m, gen(), rule="release")
    shift = boxes - torch.tensor([300.0, 400, 400, 450])
    assert torch.equal(shift[:, 0], shift[:, 2]) and torch.equal(shift[:, 1], shift[:, 3])  # shared
    assert (shift == shift.round()).all()
    assert sorted(shift[:, 0].unique().tolist()) == list(range(-5, 5))  # -5..4, high end excluded
    assert sorted(shift[:, 1].unique().tolist()) == list(range(-5, 5))
    assert not torch.equal(shift[:, 0], shift[:, 1])  # dx and dy drawn apart


def test_release_rule_limit_follows_the_shorter_side_and_the_input_scale():
    # 1024 px, w = 2, h = 40: m = min(5, int(1.0)) = 1 -> shifts in {-1, 0}
    small = prompts.noisy_box(
        masks_with_boxes([(100, 100, 102, 140)] * 200, size=1024), gen(), rule="release"
    )
    assert sorted((small[:, 0] - 100).unique().tolist()) == [-1.0, 0.0]
    # w = 1 -> m = int(0.5) = 0: no shift (the release's randint(0, 0) would fail)
    thin = prompts.noisy_box(masks_with_boxes([(100, 100, 101, 140)] * 50, size=1024), gen(), rule="release")
    assert torch.equal(thin, torch.tensor([[100.0, 100, 101, 140]] * 50))
    # 256 px (LiteMedSAM): the same object is measured at 1024 (x4) and the shift comes back at / 4:
    # w = 40, h = 20 -> 160 x 80 at 1024 -> m = 5 -> dx in {-5, ..., 4} / 4 = {-1.25, ..., 1.0}
    at256 = prompts.noisy_box(masks_with_boxes([(50, 60, 90, 80)] * 400, size=256), gen(), rule="release")
    dx = at256[:, 0] - 50
    assert sorted(dx.unique().tolist()) == [k / 4 for k in range(-5, 5)]
    assert torch.equal(at256[:, 2] - at256[:, 0], torch.full((400,), 40.0))  # the size is kept
    # w = 2 px at 256 = 8 px at 1024 -> m = min(5, 4) = 4 -> {-4..3} / 4
    narrow = prompts.noisy_box(masks_with_boxes([(50, 60, 52, 90)] * 400, size=256), gen(), rule="release")
    assert sorted((narrow[:, 0] - 50).unique().tolist()) == [k / 4 for k in range(-4, 4)]


def test_release_rule_clips_to_the_image_and_keeps_the_stream_fixed():
    m = masks_with_boxes([(0, 0, 20, 20)] * 100, size=64)
    boxes = prompts.noisy_box(m, gen(), rule="release")
    assert (boxes >= 0).all() and (boxes <= 63).all()
    # an empty mask still draws its two uniforms: the next image's box does not depend on it
    empty_first = torch.cat([torch.zeros(1, 1, 64, 64), masks_with_boxes([(10, 10, 40, 40)])])
    full_first = torch.cat([masks_with_boxes([(5, 5, 30, 30)]), masks_with_boxes([(10, 10, 40, 40)])])
    a = prompts.noisy_box(empty_first, gen(3), rule="release")
    b = prompts.noisy_box(full_first, gen(3), rule="release")
    assert a[0].tolist() == [0, 0, 63, 63] and torch.equal(a[1], b[1])
    none = prompts.noisy_box(full_first, gen(3), rule="none")
    assert none.tolist() == [[5, 5, 30, 30], [10, 10, 40, 40]]


def test_box_noise_rules_flow_into_train_and_eval_prompts():
    m = masks_with_boxes([(10, 20, 30, 40)] * 8, size=256)
    tight = prompts.eval_prompts(m, [str(i) for i in range(8)], box_noise="none")["boxes"]
    assert torch.equal(tight, torch.tensor([[10.0, 20, 30, 40]] * 8))
    release = prompts.eval_prompts(m, [str(i) for i in range(8)], box_noise="release")["boxes"]
    assert torch.equal(release[:, 2] - release[:, 0], torch.full((8,), 20.0))
    trained = prompts.train_prompts(m, gen(), p_box=1.0, box_noise="release")["boxes"]
    assert torch.equal(trained[:, 3] - trained[:, 1], torch.full((8,), 20.0))
    with pytest.raises(ValueError, match=r"'gaussian' is not one of \['per-coordinate', 'release', 'none'\]"):
        prompts.noisy_box(m, gen(), rule="gaussian")


def test_the_release_rule_is_the_default_of_training_and_evaluation():
    """Scores compare with the paper's unless a user asks otherwise: the release's box rule is the default of
    ``train.box_noise``, ``eval.box_noise``, ``infosam eval`` and :func:`noisy_box` (issue: a user got the
    noisier per-coordinate box without knowing the option)."""
    from infosam.config import EvalConfig, TrainConfig

    assert prompts.DEFAULT_BOX_NOISE == "release"
    assert TrainConfig().box_noise == EvalConfig().box_noise == "release"
    m = masks_with_boxes([(10, 20, 30, 40)] * 50)
    default = prompts.noisy_box(m, gen(), max_shift=5)
    assert torch.equal(default, prompts.noisy_box(m, gen(), max_shift=5, rule="release"))
    size = default[:, 2:] - default[:, :2]  # one shared shift: the box keeps its size
    assert (size == torch.tensor([20.0, 20.0])).all()
