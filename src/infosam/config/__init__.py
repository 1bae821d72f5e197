"""Training configuration: nested dataclasses with defaults, YAML loading, dotted overrides and validation.

A config file is YAML whose top-level keys are the sections below. A file may start from others with
``inherit: base.yaml`` (or a list), paths relative to the file; later files and the file itself win, key by key.
Overrides use dotted keys (``train.lr=1e-4``), values parsed as YAML scalars.

Every section checks its own options when it is made (types by :func:`infosam.options.check_value`, ranges and
choices in ``check``, the choices read from the registries that own them: SAM specs, attention modes, PEFT
methods, segmentation losses, prompt modes, metrics); :meth:`Config.validate` adds what spans sections or touches
files. Every error is a :class:`ConfigError` naming the option.

The sections are :mod:`infosam.config.sections`, the whole config and its cross-section rules
:mod:`infosam.config.root`, reading and writing (dicts, YAML, overrides) :mod:`infosam.config.loading`, and the
option list of ``infosam train --help`` :mod:`infosam.config.docs`.
"""

from __future__ import annotations

from .docs import option_docs
from .loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    config_to_yaml,
    deep_merge,
    load_config,
    read_yaml_tree,
    save_config,
    validate_config,
)
from .root import Config
from .sections import (
    PRECISIONS,
    CacheConfig,
    ConfigError,
    DataConfig,
    DistillConfig,
    EvalConfig,
    InfoSAMConfig,
    ModelConfig,
    PeftConfig,
    TrainConfig,
)

__all__ = [
    "PRECISIONS",
    "CacheConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "InfoSAMConfig",
    "ModelConfig",
    "PeftConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "deep_merge",
    "load_config",
    "option_docs",
    "read_yaml_tree",
    "save_config",
    "validate_config",
]
