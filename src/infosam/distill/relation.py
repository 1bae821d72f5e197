"""The relation module f(z_i, z_m) of InfoSAM (method.md section 2), shared by teacher and student."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..weightfile import save_safetensors
from .entropy import no_autocast

_FORMAT = "infosam-relation"


class RelationModule(nn.Module):
    """Relation between every image-embedding position and the single-mask output token, as unit rows.

    ``r = W_q LN(z_m) (W_k LN(z_i))^T / sqrt(C) + LN(z_m) LN(z_i)^T``, shape ``(B, 1, HW) -> (B, HW)``, then each
    row is L2-normalised (no softmax). ``z_i`` and ``z_m`` have their own LayerNorm (with affine parameters);
    ``W_q``, ``W_k`` are ``Linear(C, C)`` with bias. Parameters: ``2 (C^2 + C) + 4 C`` (132,608 for C = 256).

    Args:
        dim: channel count ``C`` of the image embeddings and of the mask token (SAM: 256).
    """

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"RelationModule dim must be >= 1, got {dim}")
        self.dim = dim
        self.norm_image = nn.LayerNorm(dim)
        self.norm_token = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)

    def forward(self, image_embeddings: Tensor, mask_tokens: Tensor) -> Tensor:
        """Relation rows.

        Args:
            image_embeddings: ``(B, C, h, w)`` SAM image embeddings.
            mask_tokens: ``(B, 1, C)`` single-mask output token (``(B, C)`` is accepted too).
        Returns:
            ``(B, h*w)`` float32 (float64 for a float64 module), each row of unit L2 norm; computed with autocast
            off whatever the input dtype or an enclosing ``torch.autocast``.
        """
        if image_embeddings.dim() != 4 or image_embeddings.shape[1] != self.dim:
            raise ValueError(
                f"image_embeddings must be (B, {self.dim}, h, w) for RelationModule(dim={self.dim}), "
                f"got {tuple(image_embeddings.shape)}"
            )
        if mask_tokens.dim() == 2:
            mask_tokens = mask_tokens.unsqueeze(1)
        b = image_embeddings.shape[0]
        if mask_tokens.shape != (b, 1, self.dim):
            raise ValueError(f"mask_tokens must be ({b}, 1, {self.dim}), got {tuple(mask_tokens.shape)}")
        # Always float32 (float64 for a float64 module), autocast off: under bf16 autocast the rows lose enough
        # precision to move L_r by up to ~1e-2 relative (4e-2 seen in training), and they feed log-entropies.
        dtype = torch.float64 if self.query.weight.dtype == torch.float64 else torch.float32
        with no_autocast(image_embeddings):
            z_i = self.norm_image(image_embeddings.to(dtype).flatten(2).transpose(1, 2))  # (B, HW, C)
            z_m = self.norm_token(mask_tokens.to(dtype))  # (B, 1, C)
            q = self.query(z_m)  # (B, 1, C)
            # q . (W_k z + b_k) = (q W_k) . z + q . b_k: the key projection is folded into the one query row
            # instead of being applied to all HW image tokens (same function; 4 M instead of 1 G multiply-adds per
            # 64 x 64 image, forward and backward alike).
            scale = 1.0 / math.sqrt(self.dim)
            row = (q @ self.key.weight) * scale + z_m  # (B, 1, C)
            bias = (q @ self.key.bias.unsqueeze(-1)) * scale  # (B, 1, 1)
            scores = row @ z_i.transpose(1, 2) + bias  # (B, 1, HW)
            return F.normalize(scores.squeeze(1), p=2.0, dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"

    def save(self, path: str | Path) -> None:
        """Write the parameters to a safetensors file (with ``dim`` in its metadata), atomically; the same
        parameters give the same bytes."""
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_safetensors(path, state, {"format": _FORMAT, "dim": str(self.dim)})

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        dim: int | None = None,
        frozen: bool = True,
        device: str | torch.device = "cpu",
    ) -> RelationModule:
        """Load a relation module: a file written by :meth:`save`, or the InfoSAM release's relation checkpoint
        (a ``torch.save`` file whose ``"relation_model"`` entry, or the whole file, is a state dict named
        ``query_proj`` / ``key_proj`` / ``layer_norm_feat`` / ``layer_norm_mask``; see
        :func:`remap_release_state`), e.g. for the frozen-relation mode (InfoSAM-T).

        Args:
            path: safetensors file written by :meth:`save`, or a release ``.pth``.
            dim: expected channel count; ``None`` takes the file's. A mismatch raises ``ValueError``.
            frozen: if true, every parameter gets ``requires_grad=False`` and the module is put in eval mode.
            device: where to put the parameters.
        Raises:
            FileNotFoundError: no such file.
            ValueError: not a relation-module file, a wrong shape, a NaN or infinity, or its dim differs from
                ``dim``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"relation module file not found: {path}")
        from .. import weightfile

        found_kind = weightfile.kind(
            path
        )  # by content: a torch file named .safetensors is still a torch file
        if found_kind is None:
            raise ValueError(
                f"{path} is not a relation-module file: it holds {weightfile.describe(path)} (expected a "
                "safetensors file written by RelationModule.save or the release's torch.save checkpoint)"
            )
        state = _read_torch_file(path) if found_kind == "torch" else _read_safetensors(path)
        if any(k.split(".")[0] in RELEASE_NAMES for k in state):
            state = remap_release_state(state, source=str(path))
        found = state.get("query.weight")
        if found is None or found.dim() != 2:
            raise ValueError(
                f"{path} is not a RelationModule file: expected keys {sorted(cls(1).state_dict())} (or the "
                f"release's {sorted(RELEASE_NAMES)}), found {sorted(state)}"
            )
        from ..guard import check_finite

        check_finite(state, str(path), hint="; these weights come from a diverged run and cannot be used")
        file_dim = found.shape[1]
        if dim is not None and dim != file_dim:
            raise ValueError(
                f"{path} holds a RelationModule with dim={file_dim}, but dim={dim} was requested"
            )
        module = cls(file_dim)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match RelationModule(dim={file_dim}): {err}") from err
        module.to(device)
        if frozen:
            module.requires_grad_(False)
            module.eval()
        return module


RELEASE_NAMES = {
    "query_proj": "query",
    "key_proj": "key",
    "layer_norm_feat": "norm_image",
    "layer_norm_mask": "norm_token",
}
"""The release's module names -> ours: ``query_proj`` projects the mask token, ``key_proj`` the image positions,
``layer_norm_feat`` normalises the image embeddings and ``layer_norm_mask`` the mask token (same formula, same
``1/sqrt(C)`` scale, so loaded weights give the same relation rows)."""


def remap_release_state(
    state: Mapping[str, Tensor], *, source: str = "relation state dict"
) -> dict[str, Tensor]:
    """The InfoSAM release's relation-module state dict under :class:`RelationModule`'s names, shapes checked.

    Args:
        state: exactly ``{query_proj, key_proj, layer_norm_feat, layer_norm_mask}.{weight, bias}``; the projections'
            weights ``(C, C)``, every bias and LayerNorm parameter ``(C,)`` with ``C`` from ``query_proj.weight``.
        source: named in error messages (the file).
    Returns:
        ``{query, key, norm_image, norm_token}.{weight, bias}`` -> the same tensors.
    Raises:
        ValueError: a missing or unexpected key, or a shape that does not fit ``C`` (the message names the key).
    """
    expected = {f"{name}.{p}" for name in RELEASE_NAMES for p in ("weight", "bias")}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} is not an InfoSAM release relation module: missing keys {missing}, unexpected keys "
            f"{unexpected} (expected {sorted(expected)})"
        )
    weight = state["query_proj.weight"]
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"{source}: query_proj.weight must be (C, C), got {tuple(weight.shape)}")
    c = weight.shape[0]
    out = {}
    for key in sorted(expected):
        name, param = key.split(".")
        shape = (c, c) if name.endswith("_proj") and param == "weight" else (c,)
        tensor = state[key]
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape:
            found = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            raise ValueError(
                f"{source}: {key} has shape {found}, expected {shape} (C = {c} from query_proj.weight)"
            )
        out[f"{RELEASE_NAMES[name]}.{param}"] = tensor
    return out


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable safetensors relation-module file: {err}") from err


def _read_torch_file(path: Path) -> dict[str, Tensor]:
    """A ``torch.save`` file read with ``weights_only=True``: the release's ``{"relation_model": state, ...}`` (its
    optimizer and scheduler entries are ignored) or a bare state dict."""
    import pickle

    from ..weightfile import torch_load

    try:
        obj = torch_load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} holds Python objects other than tensors and plain containers, so it was not unpickled "
            "(only weights_only=True loading is allowed)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{path} is truncated or corrupt: torch could not read it ({first})") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("relation_model"), Mapping):
        obj = obj["relation_model"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{path} holds no relation-module state dict (expected a dict of tensors, or one under 'relation_model')"
        )
    return dict(obj)
