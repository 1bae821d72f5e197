"""InfoSAM: parameter-efficient fine-tuning of SAM with a frozen teacher and matrix-Renyi-entropy objectives."""

__version__ = "0.1.0"


def load_model(path, *, part: str = "student", device="cpu"):
    """A SAM ready to segment from a run folder, an ``infosam export`` file or a plain SAM checkpoint.

    See :func:`infosam.load.load_model` (``part="teacher"`` gives the zero-shot base of a student) and, for
    every source and option, :func:`infosam.load.open_model`.
    """
    from .load import load_model as _load_model

    return _load_model(path, part=part, device=device)
