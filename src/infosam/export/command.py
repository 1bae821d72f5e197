"""``infosam export RUN_DIR``: open the run's student (:func:`infosam.load.open_model`), check the format fits it,
then write it with the writer of :mod:`infosam.export.formats`."""

from __future__ import annotations

from pathlib import Path

from segment_anything.modeling import Sam

from ..load import SourceError, resolve
from ..sam.family import FAMILIES, family_of, labels
from .formats import (
    FORMATS,
    OFFICIAL_FORMATS,
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
        from ..runs import CONFIG_FILE

        raise SourceError(f"{run_dir} is not a run folder (no {CONFIG_FILE}): infosam export takes a RUN_DIR")
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    # An existing output or a missing extra is refused before the (slow) model build.
    check_output(fmt, out, overwrite)
    opened = source.open(teacher=True)
    student, teacher = opened.model, opened.teacher
    family = family_of(student)
    if fmt in OFFICIAL_FORMATS and unmergeable_methods(student):
        merge_peft(student)  # raises the explanatory UnmergeableError before anything is written
    _check_family(fmt, student)
    if fmt == family.export_format:  # the family's official checkpoint layout
        base = opened.config.model.checkpoint if opened.config is not None else None
        extra = release_head_state(student.spec, base)  # MobileSAM: what its own builder loads strictly
        return export_sam(
            student, teacher, out, overwrite=overwrite, extra=extra, official_key=family.export_key
        )
    if fmt == "infosam":
        return export_student_file(student, teacher, opened.sam, out, overwrite=overwrite)
    return export_onnx(student, out, overwrite=overwrite)


def _check_family(fmt: str, student: Sam) -> None:
    """Refuse a format that does not fit the student's model family, naming the one that does."""
    family = family_of(student)
    if fmt in OFFICIAL_FORMATS and fmt != family.export_format:
        owners = labels(f for f in FAMILIES.values() if f.export_format == fmt)
        raise ValueError(
            f"--format {fmt} is for {owners} runs; this run's model is {student.spec.name} ({family.label}): "
            f"use --format {family.export_format} (or infosam)"
        )
    if fmt == "onnx" and not family.onnx_export:
        raise ValueError(
            f"--format onnx is not implemented for {family.label} yet: use --format {family.export_format} or infosam"
        )
