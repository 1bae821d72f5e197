"""What both prediction planners (:mod:`.images`, :mod:`.objects`) check before anything is written: the output
folder, the output files, and the inputs that cannot be predicted (all of them listed in one refusal)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def check_out_folder(out_dir: Path) -> None:
    """ValueError unless ``out_dir`` and its ``masks/`` and ``overlays/`` are folders or do not exist yet."""
    for folder in (out_dir, out_dir / "masks", out_dir / "overlays"):
        if folder.exists() and not folder.is_dir():
            raise ValueError(
                f"output {folder} is a file; --out takes a folder (it gets masks/ and overlays/)"
            )


def check_targets(targets: Iterable[Path], overwrite: bool) -> None:
    """FileExistsError naming the first of ``targets`` that exists, unless ``overwrite``."""
    for target in targets:
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists; pass --overwrite (overwrite=True) to replace it")


def refuse(problems: list[str], what: str, *, one_as_is: bool = True) -> None:
    """ValueError listing every problem (nothing written), if any: ``"<n> <what> cannot be predicted"``, one
    problem a line; a single problem alone as its own message when ``one_as_is``."""
    if one_as_is and len(problems) == 1:
        raise ValueError(problems[0])
    if problems:
        raise ValueError(
            f"{len(problems)} {what} cannot be predicted (nothing written):\n  " + "\n  ".join(problems)
        )
