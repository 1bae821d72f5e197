"""Contract tests every PEFT method must pass (the ``peft`` library's test matrix), on the tiny SAM spec of each
image-encoder family (ViT and TinyViT)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from infosam.peft import (
    METHODS,
    apply_peft,
    count_parameters,
    load_peft,
    parse_methods,
    parse_option_assignments,
    read_peft_spec,
    save_peft,
    trainable_state_dict,
)
from infosam.sam.build import build_sam
from infosam.sam.forward import encode_images
from infosam.sam.sam2 import Sam2Model, prompt_points, unpack
from infosam.sam.specs import SPECS

# Every registered method alone, plus compositions (the paper's students and a three-way stack on shared modules).
CASES = [
    *METHODS,
    "adapter+decoder",
    "bitfit+decoder",
    "lora+decoder",
    "adaptformer+adapter+lora",
    "conv_lora+decoder",
    "hq_token+adapter",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


# The contract matrix runs on each family's tiny spec: Meta's ViT and the packages' TinyViT.
FAMILY_SPECS = ["tiny", "tiny_tinyvit", "tiny_sam2"]


@pytest.fixture(params=FAMILY_SPECS)
def family_sam(request):
    """Factory for a randomly initialised tiny SAM of one encoder family, seeded; ``.spec`` names the spec."""

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return build_sam(request.param, **overrides)

    make.spec = SPECS[request.param]
    return make


def attention_block(name: str, spec) -> int:
    """Index of the encoder attention block parameter ``name`` lives in, counted in forward order; -1 outside.

    ViT: ``image_encoder.blocks.<i>.``. TinyViT: ``image_encoder.layers.<stage>.blocks.<j>.``, where stage 0 is
    convolutional (no attention blocks) and stage s >= 1 starts after the blocks of stages 1..s-1.
    """
    parts = name.split(".")
    if spec.family == "sam2":  # Hiera: image_encoder.trunk.blocks.<i>.
        return int(parts[3]) if name.startswith("image_encoder.trunk.blocks.") else -1
    if spec.family == "vit":
        return int(parts[2]) if name.startswith("image_encoder.blocks.") else -1
    if not name.startswith("image_encoder.layers.") or parts[3] != "blocks":
        return -1
    stage, j = int(parts[2]), int(parts[4])
    return -1 if stage == 0 else sum(spec.tinyvit_depths[1:stage]) + j


def owns(method: str, name: str, spec=SPECS["tiny"]) -> bool:
    """Whether parameter ``name`` is one that ``method`` makes trainable (what the method promises, by name)."""
    block = attention_block(name, spec)
    in_blocks = block >= 0
    if method == "decoder":
        return name.startswith(("mask_decoder.", "sam_mask_decoder."))  # SAM 2 keeps Meta's name
    if method == "bitfit":
        added = (".adapter.", ".adaptformer.", "lora_")
        return in_blocks and name.endswith(".bias") and not any(a in name for a in added)
    if method == "adapter":
        # The LayerNorms before attention and MLP: ViT's norm1/norm2, TinyViT's attn.norm/mlp.norm (wrapped).
        return block >= 2 and (".adapter." in name or ".norm" in name)
    if method == "adaptformer":
        return ".adaptformer." in name
    if method == "lora":
        return "lora_" in name and ".default" in name  # peft's adapter name; Conv-LoRA's have none
    if method == "hq_token":
        return name.startswith("mask_decoder.hq.")
    if method == "conv_lora":
        return block >= 0 and any(f".qkv.{p}" in name for p in ("lora_A", "lora_B", "gate", "experts"))
    raise AssertionError(method)


def inputs(seed: int = 1, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Two size x size images (the spec's input side) and one xyxy box each."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, size, size, generator=g)
    boxes = torch.tensor([[8.0, 10.0, 40.0, 50.0], [20.0, 4.0, 60.0, 30.0]])
    return images, boxes


def run_sam(model, images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image encoder on the batch, then prompt encoder + mask decoder per image (all multimask outputs)."""
    if isinstance(model, Sam2Model):
        return run_sam2(model, images, boxes)
    embeddings = model.image_encoder(images)
    logits, ious = [], []
    for b in range(images.shape[0]):
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes[b : b + 1], masks=None)
        low_res, iou = model.mask_decoder(
            image_embeddings=embeddings[b : b + 1],
            image_pe=model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        logits.append(low_res)
        ious.append(iou)
    return {"image_embeddings": embeddings, "low_res_logits": torch.cat(logits), "iou": torch.cat(ious)}


def run_sam2(model, images: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
    """:func:`run_sam` for SAM 2: Meta's prompt encoder and decoder (all multimask outputs, high-res features)."""
    embeddings, high_res = unpack(model, encode_images(model, images))
    sparse, dense = model.prompt_encoder(points=prompt_points(boxes, None, None), boxes=None, masks=None)
    low_res, iou, _, _ = model.mask_decoder(
        image_embeddings=embeddings,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
        repeat_image=False,
        high_res_features=high_res,
    )
    return {"image_embeddings": embeddings, "low_res_logits": low_res, "iou": iou}


def train_steps(model, steps: int = 3, lr: float = 1e-2) -> None:
    """A few Adam steps on a loss that reaches every part of the student."""
    images, boxes = inputs(size=model.spec.image_size)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        out = run_sam(model, images, boxes)
        loss = out["low_res_logits"].sigmoid().mean() + out["iou"].square().mean()
        loss = loss + out["image_embeddings"].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _unsupported(family_sam, methods: str) -> bool:
    """hq_token wraps segment_anything's decoder: on SAM 2 it is refused, by name (checked here), not run."""
    if family_sam.spec.family != "sam2" or "hq_token" not in methods.split("+"):
        return False
    with pytest.raises(ValueError, match=r"'hq_token' .* SAM 2's decoder is not supported"):
        apply_peft(family_sam(), methods)
    return True


@pytest.mark.parametrize("methods", CASES)
def test_output_shapes_unchanged(family_sam, methods):
    if _unsupported(family_sam, methods):
        return
    images, boxes = inputs(size=family_sam.spec.image_size)
    with torch.no_grad():
        base = run_sam(family_sam(), images, boxes)
        student = family_sam()
        apply_peft(student, methods, {"adapter": {"init": "torch"}} if "adapter" in methods else None)
        out = run_sam(student, images, boxes)
    g = family_sam.spec.embedding_size  # 8 (ViT tiny, SAM 2 tiny) or 16 (TinyViT tiny)
    assert out["image_embeddings"].shape == (2, 32, g, g)
    assert out["low_res_logits"].shape == (2, 3, 4 * g, 4 * g)
    for key in base:
        assert out[key].shape == base[key].shape


@pytest.mark.parametrize("methods", CASES)
def test_only_own_parameters_train(family_sam, methods):
    if _unsupported(family_sam, methods):
        return
    model = family_sam()
    spec = apply_peft(model, methods)
    names = parse_methods(methods)
    trainable = set(trainable_state_dict(model))
    expected = {n for n, _ in model.named_parameters() if any(owns(m, n, family_sam.spec) for m in names)}
    assert trainable == expected
    assert spec.methods == names
    json.dumps(spec.to_dict())  # serialisable as promised

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train_steps(model)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)}"
    for m in names:
        assert any(owns(m, n, family_sam.spec) for n in changed), f"no parameter of {m!r} moved"
    if "adapter" in names:  # zero-initialised up-projections must leave zero
        assert any(n.endswith("attn.adapter.2.weight") for n in changed)


@pytest.mark.parametrize("methods", CASES)
def test_save_load_round_trip(family_sam, tmp_path, methods):
    if _unsupported(family_sam, methods):
        return
    options = {"lora": {"use_rslora": True}} if "lora" in methods.split("+") else None
    student = family_sam(seed=3)
    spec = apply_peft(student, methods, options)
    train_steps(student, steps=2)
    path = tmp_path / "student.safetensors"
    save_peft(path, student, spec)
    assert read_peft_spec(path) == spec
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed, not left behind

    fresh = family_sam(seed=3)
    assert load_peft(path, fresh) == spec
    images, boxes = inputs(seed=7, size=family_sam.spec.image_size)
    with torch.no_grad():
        a, b = run_sam(student, images, boxes), run_sam(fresh, images, boxes)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("methods", ["adapter", "adaptformer", "lora", "conv_lora"])
def test_zero_init_starts_as_the_pretrained_model(family_sam, methods):
    images, boxes = inputs(size=family_sam.spec.image_size)
    with torch.no_grad():
        base = run_sam(family_sam(), images, boxes)
        student = family_sam()
        apply_peft(student, methods)
        out = run_sam(student, images, boxes)
    for key in base:
        # Equal in exact arithmetic (each added branch is an exact 0), and bitwise on most CPUs. Not on every one:
        # MKL's AVX2 sgemm may round differently with the operands' memory alignment (it is reproducible only in
        # its CNR mode, MKL_CBWR), and the student allocates more, so SAM 2's decoder logits moved by 1e-7 with
        # MKL_ENABLE_INSTRUCTIONS=AVX2. A branch that is not zero moves them by orders of magnitude more.
        torch.testing.assert_close(
            out[key], base[key], rtol=1e-5, atol=1e-6, msg=lambda m, k=key: f"{k}: {m}"
        )


@pytest.mark.parametrize("methods", ["adapter", "adaptformer"])
def test_torch_init_is_not_the_identity(family_sam, methods):
    images, boxes = inputs(size=family_sam.spec.image_size)
    with torch.no_grad():
        base = run_sam(family_sam(), images, boxes)
        student = family_sam()
        apply_peft(student, methods, {methods: {"init": "torch"}})
        out = run_sam(student, images, boxes)
    assert not torch.allclose(out["image_embeddings"], base["image_embeddings"])


def test_unknown_method_lists_known_ones(tiny_sam):
    with pytest.raises(
        ValueError, match="unknown PEFT method 'prefix'.*decoder, bitfit, adapter, adaptformer, lora"
    ):
        apply_peft(tiny_sam(), "adapter+prefix")
    model = tiny_sam()
    apply_peft(model, "decoder")
    with pytest.raises(ValueError, match="'decoder' is already applied"):
        apply_peft(model, "adapter")
    with pytest.raises(ValueError, match="repeated"):
        parse_methods(["decoder", "decoder"])
    with pytest.raises(ValueError, match="empty"):
        parse_methods("adapter+")


def test_bad_options_name_the_option_and_the_valid_fields(tiny_sam):
    with pytest.raises(ValueError, match=r"\['ratoi'\] for PEFT method 'adapter'.*first_block, ratio, init"):
        apply_peft(tiny_sam(), "adapter", {"adapter": {"ratoi": 0.5}})
    with pytest.raises(ValueError, match=r"adapter\.init must be one of \['zero', 'torch'\]"):
        apply_peft(tiny_sam(), "adapter", {"adapter": {"init": "xavier"}})
    with pytest.raises(ValueError, match=r"adapter\.first_block must be in 0\.\.3"):
        apply_peft(tiny_sam(), "adapter", {"adapter": {"first_block": 4}})
    with pytest.raises(ValueError, match="not applied"):
        apply_peft(tiny_sam(), "decoder", {"lora": {"r": 8}})
    with pytest.raises(ValueError, match=r"\['rank'\] for PEFT method 'lora'.*use_dora"):
        apply_peft(tiny_sam(), "lora", {"lora": {"rank": 8}})


def test_lora_passes_options_through_and_never_touches_the_decoder(tiny_sam):
    model = tiny_sam()
    spec = apply_peft(
        model, "lora", {"lora": {"r": 2, "use_dora": True, "target_modules": ["qkv", "q_proj"]}}
    )
    assert spec.options["lora"] == {
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["qkv", "q_proj"],
        "use_dora": True,
    }
    names = list(trainable_state_dict(model))
    assert names and all(n.startswith("image_encoder.") for n in names)
    assert any("lora_magnitude_vector" in n for n in names)
    assert model.image_encoder.blocks[0].attn.qkv.lora_A["default"].weight.shape == (2, 32)


@pytest.mark.parametrize("spec_name", FAMILY_SPECS)
def test_lora_first_block_keeps_lora_out_of_earlier_blocks(spec_name, tmp_path):
    """lora.first_block / first_stage: LoRA only inside the chosen attention blocks (the adapter's numbering), the
    earlier blocks untouched; the choice is saved and rebuilt."""
    from infosam.model import build_base
    from infosam.sam.family import encoder_blocks

    model = build_base(spec_name, seed=0)
    blocks = list(encoder_blocks(model))
    first = 1
    spec = apply_peft(model, "lora", {"lora": {"first_block": first}})
    assert spec.options["lora"]["first_block"] == first
    for entry in blocks:
        wrapped = [n for n, m in entry.block.named_modules() if hasattr(m, "lora_A")]
        assert bool(wrapped) == (entry.index >= first), (entry.name, wrapped)
    path = tmp_path / "s.safetensors"
    save_peft(path, model, spec)
    again = build_base(spec_name, seed=0)
    load_peft(path, again)
    assert sorted(trainable_state_dict(again)) == sorted(trainable_state_dict(model))
    # first_stage alone: TinyViT's stage >= 2; ViT has one stage (0), so stage 1 selects nothing there
    if spec_name in ("tiny_tinyvit", "tiny_sam2"):  # TinyViT attends in stages 1..3, Hiera in 0..3
        staged = build_base(spec_name, seed=0)
        apply_peft(staged, "lora", {"lora": {"first_stage": 2}})
        for entry in encoder_blocks(staged):
            assert any(hasattr(m, "lora_A") for m in entry.block.modules()) == (entry.stage >= 2)
    else:
        with pytest.raises(ValueError, match=r"lora\.first_stage=1.*select no layer.*stages \[0\]"):
            apply_peft(build_base(spec_name, seed=0), "lora", {"lora": {"first_stage": 1}})
    with pytest.raises(ValueError, match=r"lora\.first_block must be in 0\.\."):
        apply_peft(build_base(spec_name, seed=0), "lora", {"lora": {"first_block": len(blocks)}})


def test_load_errors_name_the_file(tiny_sam, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_peft(missing, tiny_sam())
    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(1)}, foreign)
    with pytest.raises(ValueError, match="foreign.safetensors.*save_peft"):
        load_peft(foreign, tiny_sam())
    student = tiny_sam()
    path = tmp_path / "s.safetensors"
    save_peft(path, student, apply_peft(student, "adapter"))
    with pytest.raises(ValueError, match="trained on SAM 'tiny'"):
        with torch.device("meta"):
            load_peft(path, build_sam("vit_b"))
    with pytest.raises(ValueError, match="s.safetensors does not match.*missing"):
        load_peft(path, tiny_sam(encoder_depth=5, encoder_global_attn_indexes=(1, 3)))


def test_parse_option_assignments():
    got = parse_option_assignments(
        ["adapter.init=torch", "lora.r=8", "lora.use_dora=true", "lora.target_modules=[a, b]"]
    )
    assert got == {
        "adapter": {"init": "torch"},
        "lora": {"r": 8, "use_dora": True, "target_modules": ["a", "b"]},
    }
    with pytest.raises(ValueError, match="METHOD.OPTION=VALUE"):
        parse_option_assignments(["init=torch"])


def test_vit_b_parameter_counts():
    # Built on the meta device: shapes only, so counting ViT-B costs no memory and no initialisation time.
    with torch.device("meta"):
        model = build_sam("vit_b")
        apply_peft(model, "adapter+decoder")
    table = count_parameters(model)
    assert table["total"] == {"all": 99_652_912, "trainable": 10_006_500}
    assert table["mask_decoder"]["trainable"] == table["mask_decoder"]["all"] == 4_058_340
    assert table["prompt_encoder"]["trainable"] == 0
    with torch.device("meta"):
        model = build_sam("vit_b")
        apply_peft(model, "lora")
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n)
    assert lora == 147_456 == count_parameters(model)["total"]["trainable"]


def test_two_saves_of_the_same_student_are_byte_identical(tiny_sam, tmp_path):
    """The PEFT file's metadata (the spec and the SAM name) came out in either order, safetensors keeping it in a
    hash map: two saves of one student gave two files. Sorted now, and the contents read back the same."""
    student = tiny_sam(seed=3)
    spec = apply_peft(student, "lora+decoder")
    paths = [tmp_path / f"peft-{i}.safetensors" for i in range(16)]
    for path in paths:
        save_peft(path, student, spec)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    assert first.index(b'"infosam_peft"') < first.index(b'"sam_spec"') < first.index(b'"image_encoder')
    assert read_peft_spec(paths[0]) == spec
    fresh = tiny_sam(seed=4)
    assert load_peft(paths[0], fresh) == spec
    for name, value in trainable_state_dict(fresh).items():
        assert torch.equal(value, trainable_state_dict(student)[name]), name
