"""Start-up check that torch and torchvision are a matching pair (one line instead of a deep RuntimeError).

A torchvision built for another torch (a different release, or a CUDA build beside a CPU torch, as when pip
falls back to PyPI for one of the two) fails at import with ``operator torchvision::nms does not exist``,
far from anything that names the cause. :func:`check_torch_pair` compares the installed versions
(torchvision ``0.N`` pairs with torch ``2.(N-15)``: 0.29 <-> 2.14, 0.24 <-> 2.9) and, for commands that run a
model, imports torchvision, turning that error into a :class:`~infosam.cli.CLIError` that names both versions
and the pip command that installs a matching pair. ``INFOSAM_SKIP_TORCH_CHECK=1`` skips the check (e.g. for
source builds whose versions do not follow the pairing).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re

TORCHVISION_MINOR_OFFSET = 15  # torchvision 0.N <-> torch 2.(N - 15), from 0.16 <-> 2.1 on
_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


class TorchPairError(Exception):
    """torch and torchvision do not match; the message is one line with both versions and the fix."""


def installed(name: str) -> str | None:
    """The installed version of distribution ``name`` (``"2.13.0+cpu"``), or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, int, int] | None:
    match = _RELEASE.match(version)
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def matching_torchvision(torch_version: str) -> str | None:
    """The torchvision release that pairs with ``torch_version`` (``"2.13.0+cpu"`` -> ``"0.28.0"``)."""
    release = _release(torch_version)
    if release is None or release[0] != 2:
        return None
    return f"0.{release[1] + TORCHVISION_MINOR_OFFSET}.{release[2]}"


def pairs(torch_version: str, torchvision_version: str) -> bool | None:
    """Whether the two releases pair (major.minor); None when either version does not follow the scheme."""
    torch_release, vision_release = _release(torch_version), _release(torchvision_version)
    if torch_release is None or vision_release is None or torch_release[0] != 2 or vision_release[0] != 0:
        return None
    return vision_release[1] - TORCHVISION_MINOR_OFFSET == torch_release[1]


def _fix(torch_version: str) -> str:
    public = torch_version.split("+")[0]
    vision = matching_torchvision(torch_version)
    pin = f"torch=={public} torchvision=={vision}" if vision else "torch torchvision"
    index = ""
    if "+" in torch_version:  # a build from PyTorch's own index (cpu, cu124, ...): take both from there
        index = f" --index-url https://download.pytorch.org/whl/{torch_version.split('+', 1)[1]}"
    return f"pip install --force-reinstall {pin}{index}"


def mismatch_message(torch_version: str, torchvision_version: str, detail: str = "") -> str:
    """The one-line error for a torch/torchvision pair that does not work together."""
    why = f" ({detail})" if detail else ""
    return (
        f"torch {torch_version} and torchvision {torchvision_version} do not match{why}; "
        f"install a matching pair from one index: {_fix(torch_version)}"
    )


def check_torch_pair(import_torchvision: bool) -> None:
    """Raise :class:`TorchPairError` when the installed torch and torchvision do not match.

    Compares the installed versions (cheap, no import); with ``import_torchvision`` (commands that run a model,
    which import it anyway) also imports torchvision, which catches a build mismatch of a matching release (a CUDA
    torchvision beside a CPU torch) as the ``torchvision::nms does not exist`` RuntimeError.
    """
    if os.environ.get("INFOSAM_SKIP_TORCH_CHECK", "").strip() not in ("", "0"):
        return
    torch_version, vision_version = installed("torch"), installed("torchvision")
    if torch_version is None or vision_version is None:
        return  # not installed as distributions (or torchvision absent): the import says what is missing
    if pairs(torch_version, vision_version) is False:
        raise TorchPairError(mismatch_message(torch_version, vision_version))
    if not import_torchvision:
        return
    try:
        _import_torchvision()
    except (RuntimeError, ImportError, OSError) as err:
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if isinstance(err, RuntimeError) and "torchvision::" not in text:
            raise  # not the operator-registration failure: not ours to rename
        raise TorchPairError(mismatch_message(torch_version, vision_version, text)) from err


def _import_torchvision() -> None:
    importlib.import_module("torchvision")
