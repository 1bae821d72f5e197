"""Optional parts of the package: which extra brings which import, and the one-line error when one is missing.

``pip install infosam`` trains, evaluates, predicts and exports SAM/infosam files. The web page, ONNX export and
report figures need more (``pip install 'infosam[serve]'``, ``[export]``, ``[report]``, or ``[all]``);
:func:`require` imports such a module or raises :class:`MissingExtraError` saying what to install, which the
command line prints as one line (exit 2).
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRAS = {
    "gradio": "serve",
    "onnx": "export",
    "onnxruntime": "export",
    "matplotlib": "report",
}
"""Top-level module -> the extra that installs it."""


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` (e.g. ``"matplotlib.pyplot"``) for ``what`` (e.g. ``"infosam report's figures"``).

    Raises:
        MissingExtraError: the module is not installed; the message says ``pip install 'infosam[<extra>]'``.
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is None or err.name.split(".")[0] != top:
            raise  # the module is there but something it imports is missing: not ours to rename
        extra = EXTRAS.get(top, "all")
        raise MissingExtraError(
            f"{what} needs {top}, which is not installed: pip install 'infosam[{extra}]' (or 'infosam[all]')"
        ) from err
