"""Prompt sampling: noisy boxes, points, the training mix, deterministic test prompts, empty masks."""

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
    boxes = prompts.noisy_box(m, gen(), max_shift=5, input_sizes=sizes)
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


def test_test_prompts_depend_only_on_seed_and_id():
    m = masks_with_boxes([(10, 10, 30, 30), (20, 5, 40, 25), (0, 0, 10, 10)])
    ids = ["images/a.jpg", "images/b.jpg", "images/c.jpg"]
    full = prompts.test_prompts(m, ids, seed=42)["boxes"]
    # Same prompt when the image is alone, in another order, or evaluated twice.
    for i in range(3):
        assert torch.equal(prompts.test_prompts(m[i : i + 1], ids[i : i + 1], seed=42)["boxes"][0], full[i])
    rev = prompts.test_prompts(m.flip(0), ids[::-1], seed=42)["boxes"]
    assert torch.equal(rev.flip(0), full)
    assert not torch.equal(prompts.test_prompts(m, ids, seed=43)["boxes"], full)
    p1 = prompts.test_prompts(m, ids, seed=42, mode="points", n_fg=2, n_bg=3)
    p2 = prompts.test_prompts(m[1:], ids[1:], seed=42, mode="points", n_fg=2, n_bg=3)
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
