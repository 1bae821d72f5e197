"""Every registered model family answers every question the rest of the code asks it, and no module outside
``infosam.sam.family`` compares family names (docs/architecture.md, "Where to add: A model family").

Adding a family: its module in ``src/infosam/sam/family/``, its line in ``FAMILIES``, and its row in
``FAMILY_MODELS`` below (a tiny random model of the family).
"""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from infosam.export.formats import OFFICIAL_FORMATS
from infosam.prefix import encoder_segments
from infosam.sam.build import build_sam
from infosam.sam.family import (
    FAMILIES,
    Family,
    encoder_blocks,
    family_of,
    family_of_encoder,
    family_of_spec,
    family_of_weights,
)
from infosam.sam.forward import sam_forward
from infosam.sam.specs import get_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py

# One row per registered family: its tiny random model.
FAMILY_MODELS = {"vit": "tiny", "tinyvit": "tiny_tinyvit", "sam2": "tiny_sam2"}

CAPABILITIES = ("student_prefix", "hq_token", "distill_baselines", "onnx_export", "meta_device")
REFUSALS_WITH_REASONS = ("student_prefix", "distill_baselines")  # their messages quote Family.why_not


def test_every_family_has_a_row():
    assert set(FAMILY_MODELS) == set(FAMILIES)
    assert all(isinstance(f, Family) and FAMILIES[f.name] is f for f in FAMILIES.values())


@pytest.fixture(scope="module", params=sorted(FAMILY_MODELS))
def built(request):
    """(family, its tiny model built from seed 0, the spec name)."""
    torch.manual_seed(0)
    name = FAMILY_MODELS[request.param]
    return FAMILIES[request.param], build_sam(name), name


def test_lookups_agree(built):
    family, model, name = built
    assert family_of(model) is family
    assert family_of_spec(model.spec) is family
    assert family_of_encoder(model.image_encoder) is family
    assert family_of_weights(model.state_dict()) is family
    assert name in family.specs()
    assert family.describe(model.state_dict())[0] == name  # checkpoint recognition finds the row


def test_blocks_are_listed_in_forward_order(built):
    family, model, _ = built
    blocks = family.blocks(model.image_encoder)
    assert blocks and [b.index for b in blocks] == list(range(len(blocks)))
    assert [b.block for b in encoder_blocks(model)] == [b.block for b in blocks]
    for b in blocks:
        assert model.get_submodule(b.name) is b.block
        assert isinstance(b.dim, int) and b.dim > 0
        assert len(b.norms) == 2 and all(isinstance(n, nn.LayerNorm) for n in b.norms)
    assert [b.stage for b in blocks] == sorted(b.stage for b in blocks)
    ran: list[nn.Module] = []
    handles = [b.block.register_forward_hook(lambda m, _i, _o: ran.append(m)) for b in blocks]
    size = model.spec.image_size
    try:
        with torch.no_grad():
            model.image_encoder(torch.randn(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    assert ran == [b.block for b in blocks]


def test_feature_taps_are_blocks(built):
    family, model, _ = built
    depth = len(family.blocks(model.image_encoder))
    taps = family.feature_taps(model)
    assert taps and list(taps) == sorted(set(taps)) and all(0 <= t < depth for t in taps)
    assert family.early_block(model) in family.blocks(model.image_encoder)


def test_capabilities_are_flags_with_reasons(built):
    family, _, _ = built
    for name in CAPABILITIES:
        assert isinstance(getattr(family, name), bool), name
    for name in REFUSALS_WITH_REASONS:
        assert getattr(family, name) or family.why_not.get(name), f"{family.name}: no reason for {name}"
    assert family.export_format in OFFICIAL_FORMATS
    assert family.export_key is None or isinstance(family.export_key, str)
    assert all(isinstance(getattr(family, a), str) and getattr(family, a) for a in ("label", "encoder_label"))


def test_segments_compose_to_the_encoder(built):
    family, model, _ = built
    encoder = model.image_encoder
    if not family.student_prefix:
        with pytest.raises(TypeError, match="student prefix cache knows"):
            encoder_segments(encoder)
        return
    size = model.spec.image_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = x
        for segment in family.segments(encoder):
            y = segment.run(y)
        assert torch.equal(y, encoder(x))


def test_encode_and_decode_go_through_the_family(built):
    _, model, _ = built
    size, c, g = model.spec.image_size, model.spec.prompt_embed_dim, model.spec.embedding_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[2.0, 3.0, size / 2, size / 2], [1.0, 1.0, size - 2.0, size - 3.0]])
    with torch.no_grad():
        out = sam_forward(model, images, boxes=boxes)
    assert out.image_embeddings.shape == (2, c, g, g)
    assert out.mask_tokens.shape == (2, 1, c)
    assert out.low_res_logits.shape == (2, 1, 4 * g, 4 * g) and out.iou_predictions.shape == (2, 1)


def test_export_formats_follow_the_family(built):
    from infosam.export.command import _check_family

    family, model, _ = built
    _check_family(family.export_format, model)
    _check_family("infosam", model)
    for fmt in OFFICIAL_FORMATS:
        if fmt != family.export_format:
            with pytest.raises(ValueError, match=f"use --format {family.export_format}"):
                _check_family(fmt, model)
    if family.onnx_export:
        _check_family("onnx", model)
    else:
        with pytest.raises(ValueError, match=f"not implemented for {family.label}"):
            _check_family("onnx", model)


def test_meta_device_flag_holds(built):
    family, _, name = built
    if family.meta_device:
        with torch.device("meta"):
            assert next(build_sam(name).parameters()).is_meta


def test_an_unknown_model_falls_back_and_an_unknown_family_is_named():
    assert family_of(nn.Linear(2, 2)) is FAMILIES["vit"]  # read through Meta's Sam interface, as before
    assert family_of_encoder(nn.Linear(2, 2)) is None
    spec = get_spec("tiny", family="resnet")
    with pytest.raises(ValueError, match="unknown family 'resnet'"):
        family_of_spec(spec)


# ---------------------------------------------------------------------------------------------------------------
# the rule: only infosam.sam.family knows family names

SRC = Path(__file__).resolve().parents[1] / "src" / "infosam"
FAMILY_PACKAGE = SRC / "sam" / "family"
# A family check by name: is_sam2, `family ==` / `!=`, `family in (...)`, getattr(..., "family", ...).
NAME_CHECK = re.compile(
    r"is_sam2|\bfamily\b\s*[!=]=|[!=]=\s*\S*\.family\b|\bfamily\s+(not\s+)?in\s*[(\[{]|getattr\([^)]*[\"']family[\"']"
)


@pytest.mark.parametrize(
    "line",
    [
        'if s.family == "sam2":',
        'if spec.family != "vit":',
        'if "vit" == spec.family:',
        'if spec.family in ("vit", "tinyvit"):',
        'if getattr(model.spec, "family", "vit") == "sam2":',
        "if is_sam2(model):",
    ],
)
def test_the_rule_sees_a_family_check(line):
    assert NAME_CHECK.search(line)


def test_no_module_outside_the_family_package_checks_a_family_name():
    offenders = [
        f"{path.relative_to(SRC.parent)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if FAMILY_PACKAGE not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if NAME_CHECK.search(line)
    ]
    assert not offenders, "ask infosam.sam.family instead of checking a family's name:\n" + "\n".join(
        offenders
    )
