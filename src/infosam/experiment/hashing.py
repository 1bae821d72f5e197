"""The config hash of a cell: what names the results of one config, across machines and package versions.

A cell's folder and its record carry the hash of its resolved config (:func:`config_hash`); a changed config
under an existing cell name is refused. The hash of every recorded cell must never change: an option added with
a default that keeps the old behaviour leaves it alone, and a default that changes is pinned
(:data:`HASH_PINNED_DEFAULTS`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..config import Config, config_to_dict


def config_hash(config: Config, experiment_dir: Path) -> str:
    """A hash of everything in ``config`` that shapes the run and differs from the defaults. Left out: the output
    path and the dataset folder (the experiment's split lists, checked separately, pin the images by their paths
    inside it); split files are named relative to the experiment folder. So an experiment moved, or continued on a
    machine whose data lives elsewhere, keeps its hashes; and an option added to the package later, whose default
    keeps the old behaviour, does not change the hash of cells that never set it, and a default that changes is
    pinned in :data:`HASH_PINNED_DEFAULTS` (records stay valid across versions; each record also names the code
    that made it)."""
    data = _non_default(config_to_dict(config), hash_defaults())
    data.pop("output", None)
    data.setdefault("data", {}).pop("path", None)
    for key in ("train_split", "test_split"):
        if key not in data["data"]:
            continue
        path = Path(data["data"][key])
        if path.is_relative_to(experiment_dir):
            data["data"][key] = path.relative_to(experiment_dir).as_posix()
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


HASH_PINNED_DEFAULTS = {
    "train": {"box_noise": "per-coordinate"},
    "eval": {"box_noise": "per-coordinate"},
}
"""Options whose default changed after cells were recorded, with the default they had then. :func:`config_hash`
compares a config with :func:`hash_defaults`, so a default that moves changes no recorded cell's hash: a cell that
relied on the old default still hashes without the option, and one that named the new value still hashes with it.
(The release box rule became the default of ``train.box_noise`` and ``eval.box_noise``; the decoder-only grid used
the old one by default, the encoder and MobileSAM grids name ``release``.)"""


def hash_defaults() -> dict:
    """The defaults :func:`config_hash` leaves out: today's, with :data:`HASH_PINNED_DEFAULTS` in force."""
    defaults = config_to_dict(Config())
    for section, values in HASH_PINNED_DEFAULTS.items():
        defaults[section].update(values)
    return defaults


def _non_default(values: dict, defaults: dict) -> dict:
    """The entries of ``values`` that differ from ``defaults`` (recursively for sections)."""
    out = {}
    for key, value in values.items():
        default = defaults.get(key, object())
        if isinstance(value, dict) and isinstance(default, dict):
            inner = _non_default(value, default)
            if inner:
                out[key] = inner
        elif value != default:
            out[key] = value
    return out
