"""``infosam export RUN_DIR``: open the run's student (:func:`infosam.load.open_model`), check the format fits it,
then write it with the writer of :mod:`infosam.export.formats`."""

from __future__ import annotations

from pathlib import Path

from segment_anything.modeling import Sam

from ..load import SourceError, resolve
from .formats import (
    FORMATS,
    check_output,
    export_onnx,
    export_sam,
    export_student_file,
    merge_peft,
    release_head_state,
    unmergeable_methods,
)


def default_out(run_dir: str | Path, fmt: str) -> Path:
    """Where ``infosam export`` writes by default: ``RUN_DIR/export/{sam.pth, student.safetensors, onnx/}``."""
    from ..runs import RunDir

    names = {"sam": "sam.pth", "sam2": "sam2.pt", "infosam": "student.safetensors", "onnx": "onnx"}
    return RunDir(run_dir).export_dir / names[fmt]


def export_run(
    run_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    *,
    checkpoint: str | Path | None = None,
    overwrite: bool = False,
    require_final: bool = False,
) -> Path:
    """Export the student of ``run_dir`` in format ``fmt`` (``sam``, ``sam2``, ``infosam`` or ``onnx``); returns
    the path. An unfinished run exports its newest intact checkpoint with a warning, unless ``require_final`` (then
    :class:`infosam.runs.UnfinishedRunError`).

    Raises:
        UnmergeableError: ``sam`` asked for an adapter student. FileExistsError: the output exists.
        SourceError: ``run_dir`` is not a run folder.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    source = resolve(run_dir, checkpoint=checkpoint, require_final=require_final)
    if source.kind != "run":
        raise SourceError(f"{run_dir} is not a run folder (no config.yaml): infosam export takes a RUN_DIR")
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    # An existing output or a missing extra is refused before the (slow) model build.
    check_output(fmt, out, overwrite)
    opened = source.open(teacher=True)
    student, teacher = opened.model, opened.teacher
    if fmt in ("sam", "sam2") and unmergeable_methods(student):
        merge_peft(student)  # raises the explanatory UnmergeableError before anything is written
    _check_family(fmt, student)
    if fmt == "sam":
        base = opened.config.model.checkpoint if opened.config is not None else None
        extra = release_head_state(student.spec, base)  # MobileSAM: what its own builder loads strictly
        return export_sam(student, teacher, out, overwrite=overwrite, extra=extra)
    if fmt == "sam2":
        return export_sam(student, teacher, out, overwrite=overwrite, official_key="model")
    if fmt == "infosam":
        return export_student_file(student, teacher, opened.sam, out, overwrite=overwrite)
    return export_onnx(student, out, overwrite=overwrite)


def _check_family(fmt: str, student: Sam) -> None:
    """Refuse a format that does not fit the student's model family, naming the one that does."""
    from ..sam.sam2 import is_sam2

    sam2 = is_sam2(student)
    if fmt == "sam" and sam2:
        raise ValueError("this run's model is a SAM 2: export it with --format sam2 (or infosam)")
    if fmt == "sam2" and not sam2:
        raise ValueError(
            f"--format sam2 is for SAM 2 runs; this run's model is {student.spec.name}: use --format sam"
        )
    if fmt == "onnx" and sam2:
        raise ValueError("--format onnx is not implemented for SAM 2 yet: use --format sam2 or infosam")
