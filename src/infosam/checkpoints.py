"""Checkpoints and weights folders: writing them atomically, finding the newest intact one, verifying and loading
them, rotating old ones away, and the random-number state a resume restores.

A weights folder (a run's ``weights/*``, ``checkpoints/step-*``) holds ``peft.safetensors`` (the student's trained
tensors and PEFT spec), when the relation module trained ``relation.safetensors``, and ``manifest.json`` (sha256
and size of each file, checked on every load). A resume checkpoint ``step-<step>/`` is a weights folder plus
``state.pt`` (optimizer, scheduler, RNG, position); the checkpoints folder holds them and ``latest``, the name of
the newest complete one (a hint: resume takes the newest intact ``step-*`` folder, warning about any damaged one
it passes over). Where these folders sit in a run folder is :class:`infosam.runs.RunDir`'s business.

No weights folder is ever written with a NaN or an infinity in it, and none is loaded with one.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .files import NoSpaceError, atomic_write, atomic_write_text, final_name, sha256_file
from .guard import NonFiniteError, check_finite, nested_tensors
from .weightfile import require_safetensors, torch_load

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

    from .distill.relation import RelationModule
    from .peft import PeftSpec

LATEST = "latest"
STATE_FILE = "state.pt"
PEFT_FILE = "peft.safetensors"
RELATION_FILE = "relation.safetensors"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "infosam-weights-folder/1"
_STEP_DIR = re.compile(r"step-(\d+)")

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint or weights folder is damaged (missing, truncated or changed file, unreadable state,
    non-finite tensors); the message names the file and what is wrong with it."""


# --------------------------------------------------------------------------------------------- weights folders


def peft_file(folder: str | Path) -> Path:
    """The student's PEFT weights inside a weights or checkpoint folder."""
    return Path(folder) / PEFT_FILE


def relation_file(folder: str | Path) -> Path:
    """The relation module's weights inside a weights or checkpoint folder (absent when it did not train)."""
    return Path(folder) / RELATION_FILE


def weights_writer(
    student: Sam, peft_spec: PeftSpec, relation: RelationModule | None = None
) -> Callable[[Path], None]:
    """A function that writes the trained weights (PEFT tensors, relation module if given) into a folder."""
    from .peft import save_peft, trainable_state_dict

    def write(folder: Path) -> None:
        tensors = list(trainable_state_dict(student).items())
        if relation is not None:
            tensors += [(f"relation.{k}", v) for k, v in relation.state_dict().items()]
        target = folder.with_name(final_name(folder))  # the name it will have, not the temporary's
        check_finite(tensors, f"refusing to write weights to {target}", error=NonFiniteError)
        folder.mkdir(parents=True, exist_ok=True)
        save_peft(peft_file(folder), student, peft_spec)
        if relation is not None:
            relation.save(relation_file(folder))
        write_manifest(folder)

    return write


# --------------------------------------------------------------------------------------------- manifests


def write_manifest(folder: str | Path) -> Path:
    """Write ``manifest.json`` into a weights/checkpoint folder: sha256 and size of every file beside it."""
    folder = Path(folder)
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    path = folder / MANIFEST_FILE
    path.write_text(
        json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2) + "\n", encoding="utf-8"
    )
    return path


def verify_folder(folder: str | Path) -> bool:
    """Check a weights/checkpoint folder against its ``manifest.json``; ``False`` when it has none (written
    before manifests existed: nothing to check against).

    Raises:
        CheckpointError: a listed file is missing, has another size (truncated) or another sha256 (changed).
    """
    folder = Path(folder)
    manifest = folder / MANIFEST_FILE
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    except (ValueError, KeyError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{manifest} is damaged ({err})") from err
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing (listed in {MANIFEST_FILE})")
        size = path.stat().st_size
        if size == 0 and entry["bytes"]:
            raise CheckpointError(f"{path} is empty, {entry['bytes']} bytes were written")
        if size != entry["bytes"]:
            raise CheckpointError(
                f"{path} is truncated or grown: {size} bytes, {entry['bytes']} were written"
            )
        if sha256_file(path) != entry["sha256"]:
            raise CheckpointError(f"{path} was changed or damaged after it was written (sha256 mismatch)")
    return True


# --------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    root: str | Path,
    step: int,
    write_weights: Callable[[Path], None],
    state: dict,
    *,
    keep: int = 2,
    resume_hint: str = "write it again",
) -> Path:
    """Write resume checkpoint ``<root>/step-<step>/`` atomically (weights, ``state.pt``, a manifest of
    checksums) and point ``<root>/latest`` at it, then remove all but ``keep`` of the checkpoints up to it.

    Args:
        root: the checkpoints folder (a run's ``checkpoints/``).
        step: optimizer steps done.
        write_weights: writes the trained weights into the folder it is given.
        state: resume state (optimizer, scheduler, RNG, position), saved with ``torch.save`` as ``state.pt``.
        keep: how many newest resume checkpoints to keep. Only checkpoints of earlier steps are removed, never
            a later one (a run resumed from an older checkpoint than its newest keeps the newer ones until it
            writes their steps again).
        resume_hint: what to do once space is freed, named in the :class:`NoSpaceError` message.
    Raises:
        NoSpaceError: the disk filled up; the previous checkpoints are kept and the temporary is removed.
        NonFiniteError: the weights or the optimizer state hold NaN/inf (nothing is written).
    """
    root = Path(root)
    name = f"step-{step:06d}"
    check_finite(
        nested_tensors(state.get("optimizer", {}), "optimizer"),
        f"refusing to write checkpoint {root / name}",
        error=NonFiniteError,
    )

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        write_weights(tmp)
        buffer = io.BytesIO()  # serialise first: a full disk then fails in an ordinary write (OSError ENOSPC)
        torch.save(state, buffer)
        with open(tmp / STATE_FILE, "wb") as f:
            f.write(buffer.getbuffer())
        write_manifest(tmp)

    try:
        path = atomic_write(root / name, write)
        atomic_write_text(root / LATEST, name + "\n")
    except NoSpaceError as err:
        kept = [p.name for p in checkpoint_folders(root) if p.name != name]
        previous = f"the previous checkpoint {kept[0]} is kept" if kept else "no earlier checkpoint exists"
        raise NoSpaceError(
            f"no space left on {root} while writing checkpoint {name}; {previous}, temporaries removed; free "
            f"space, then {resume_hint}"
        ) from err
    earlier = [p for p in checkpoint_folders(root) if _step_of(p) < step]
    for old in earlier[max(keep - 1, 0) :]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _step_of(folder: Path) -> int:
    return int(_STEP_DIR.fullmatch(folder.name).group(1))


def checkpoint_folders(root: str | Path) -> list[Path]:
    """The ``step-*`` folders in the checkpoints folder ``root``, newest (highest step) first; temporaries excluded."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=_step_of, reverse=True)


def verify_checkpoint(checkpoint: str | Path) -> dict:
    """Check a resume checkpoint (manifest checksums, weights present, ``state.pt`` readable and finite) and
    return its state.

    Raises:
        CheckpointError: what is wrong, naming the file.
    """
    checkpoint = Path(checkpoint)
    verify_folder(checkpoint)
    if not peft_file(checkpoint).is_file():
        raise CheckpointError(f"{peft_file(checkpoint)} is missing")
    # By content, not name: a manifest that matches proves the bytes were not changed, not what they are.
    require_safetensors(peft_file(checkpoint), "a PEFT weights file", error=CheckpointError)
    if relation_file(checkpoint).is_file():
        require_safetensors(relation_file(checkpoint), "a relation-module file", error=CheckpointError)
    return load_state(checkpoint)


def find_checkpoint(root: str | Path) -> Path | None:
    """The newest intact resume checkpoint in the checkpoints folder ``root`` (by step, whatever ``<root>/latest``
    says), or ``None`` when there is no checkpoint at all. Each damaged one passed over is named in a warning.

    Raises:
        CheckpointError: checkpoints exist but none is intact (each is named with its defect).
    """
    root = Path(root)
    folders = checkpoint_folders(root)
    pointer = root / LATEST
    if folders and not pointer.is_file():
        log.warning("%s is missing; looking for the newest intact checkpoint instead", pointer)
    elif pointer.is_file():
        named = pointer.read_text(encoding="utf-8").strip()
        if not (root / named).is_dir():
            log.warning(
                "%s names %s, which is missing; looking for the newest intact checkpoint", pointer, named
            )
    bad = []
    for folder in folders:
        try:
            verify_checkpoint(folder)
        except CheckpointError as err:
            log.warning("checkpoint %s is damaged, skipping it: %s", folder.name, err)
            bad.append(f"{folder.name}: {err}")
            continue
        if bad:
            log.warning("using %s, the newest intact checkpoint", folder)
        return folder
    if bad:
        raise CheckpointError(f"no intact checkpoint in {root}: " + "; ".join(bad))
    return None


def load_state(checkpoint: str | Path) -> dict:
    """Read the resume state of a checkpoint folder.

    Raises:
        CheckpointError: ``state.pt`` is missing, empty, truncated, not a torch file, holds code (refused by
            ``weights_only``) or a non-finite optimizer state; the message names it.
    """
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (its write was cut short)")
    try:
        # weights_only=True: the state holds tensors and plain Python data only (see rng_state).
        state = torch_load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{path} cannot be read (truncated or damaged): {first}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not an infosam resume state")
    check_finite(nested_tensors(state.get("optimizer", {}), "optimizer"), str(path), error=CheckpointError)
    return state


# --------------------------------------------------------------------------------------------- RNG state


def rng_state() -> dict:
    """The global random states of Python, NumPy and torch (CPU and CUDA), as torch-loadable plain data."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
