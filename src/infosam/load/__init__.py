"""One door from whatever names a model to that model, ready to segment with.

:func:`open_model` is the only place evaluation, prediction, the web page, export, the experiment runner and
:func:`infosam.load_model` turn a source into a model. A source is one of:

- a run folder (holds ``config.yaml``): its fine-tuned student, base SAM from the run's config (read once) plus
  the saved PEFT weights; ``teacher=True`` also builds the pretrained base it was trained from;
- a self-contained student file (``infosam export RUN_DIR --format infosam``): the same, without the run folder;
- a plain SAM state dict (an official ``.pth`` of ViT-B/L/H, LiteMedSAM, MobileSAM or SAM 2, or an
  ``infosam export --format sam``/``sam2`` file): that model, its architecture recognised from the weights;
- a SAM model name (``vit_b``, ``litemedsam``, ``tiny``, ...) with ``checkpoint`` (``"bundled"`` for
  LiteMedSAM's packaged weights; the random ``tiny`` test models need none): zero-shot SAM;
- a :class:`~infosam.config.ModelConfig` (zero-shot SAM of that section) or a whole :class:`~infosam.config.Config`
  (the pretrained base that config trains from: its ``train.seed`` draws whatever no checkpoint covers, so a random
  test model is the very teacher a run of that config had);
- an already-built SAM module, used as given.

The encoder attention (:func:`infosam.model.build_base`'s ``attention``: fast SDPA kernels, TinyViT's included) is
chosen here for every inference caller: a run's or config's own ``model.attention``, otherwise ``"fold"``.

:func:`resolve` looks at a source without building anything (a run's config is read, an export's metadata), so
callers check their other inputs before the (possibly slow) build of :meth:`ModelSource.open`.

Modules: :mod:`.base` (the kinds of source, :class:`ModelSource`, :class:`OpenedModel` and the table from a kind
to its opener), :mod:`.door` (:func:`resolve`, :func:`open_model`, :func:`load_model`) and one module per kind of
source, each registering its openers in the table: :mod:`.run` (a run folder; :func:`load_run`), :mod:`.student`
(a self-contained student file) and :mod:`.zero_shot` (a SAM checkpoint, a model name, a config, a built module).
"""

from .base import KINDS, ModelSource, OpenedModel, SourceError
from .door import load_model, open_model, resolve
from .run import given_weights, load_run, run_description
from .student import FORMAT_KEY, FORMAT_VERSION, MODEL_KEY, PEFT_KEY, is_student_file, load_student_file
from .zero_shot import RANDOM_MODELS

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "KINDS",
    "MODEL_KEY",
    "PEFT_KEY",
    "RANDOM_MODELS",
    "ModelSource",
    "OpenedModel",
    "SourceError",
    "given_weights",
    "is_student_file",
    "load_model",
    "load_run",
    "load_student_file",
    "open_model",
    "resolve",
    "run_description",
]
