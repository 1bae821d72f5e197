"""What storing the teacher's image embeddings in float16 (or bfloat16) changes, against float32.

Runs the teacher encoder once on a batch (real Kvasir images when $INFOSAM_DATA or ../shared/data has them, else
random), stores the embeddings through :class:`infosam.cache.TeacherCache` in each dtype, reads them back and
compares: the embeddings, the teacher's decoder outputs (low-res logits, predicted IoU, mask token, binary mask
agreement at 0) and the InfoSAM terms L_r and L_d (student = the same SAM with "adapter+decoder", adapters
initialised like the paper's release so it differs from the teacher; one seeded relation module).
Weights are random unless --checkpoint names an official file.

    python benchmarks/bench_cache_precision.py --preset vit_b --image-size 1024 --batch 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _batch(image_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    from infosam.data.formats import open_dataset

    root = Path(os.environ.get("INFOSAM_DATA", REPO.parent / "shared" / "data")) / "kvasir-seg"
    if (root / "images").is_dir():
        dataset = open_dataset(root, image_size=image_size)
        samples = [dataset[i] for i in range(n)]
        return (
            torch.stack([s["image"] for s in samples]),
            torch.stack([s["mask"] for s in samples]),
            str(root),
        )
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, 1, image_size, image_size)
    masks[..., image_size // 4 : image_size // 2, image_size // 3 : image_size // 2] = 1
    return torch.randn(n, 3, image_size, image_size, generator=g), masks, "random images"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="vit_b")
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--checkpoint", default=None)
    args = parser.parse_args(argv)

    from infosam.cache import TeacherCache, content_keys
    from infosam.data.prompts import tight_box
    from infosam.distill.loss import infosam_terms
    from infosam.distill.relation import RelationModule
    from infosam.fingerprint import model_teacher_fingerprint
    from infosam.peft import apply_peft
    from infosam.sam.attention import enable_fast_attention
    from infosam.sam.build import build_sam
    from infosam.sam.forward import decode, encode_images

    started = time.perf_counter()
    torch.manual_seed(0)
    teacher = build_sam(args.preset, checkpoint=args.checkpoint, image_size=args.image_size).requires_grad_(
        False
    )
    torch.manual_seed(0)
    student = build_sam(args.preset, checkpoint=args.checkpoint, image_size=args.image_size)
    enable_fast_attention(teacher)
    enable_fast_attention(student)
    apply_peft(student, "adapter+decoder", {"adapter": {"init": "torch"}})
    torch.manual_seed(1)
    relation = RelationModule(teacher.spec.prompt_embed_dim)
    images, masks, source = _batch(args.image_size, args.batch)
    boxes = torch.stack([tight_box(m[0]) for m in masks]).float()

    with torch.no_grad():
        exact = encode_images(teacher, images)
        student_out = decode(student, encode_images(student, images), boxes=boxes)
        fingerprint = model_teacher_fingerprint(teacher, args.checkpoint, "no")
        keys = content_keys(images)
        results = {}
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            with tempfile.TemporaryDirectory() as d:
                cache = TeacherCache(d, fingerprint, dtype=dtype)
                cache.put(keys, exact)
                emb = cache.get(keys)
            out = decode(teacher, emb, boxes=boxes)
            terms = infosam_terms(relation, out, student_out)
            results[str(dtype).removeprefix("torch.")] = (emb, out, terms)

    ref_emb, ref_out, ref_terms = results["float32"]
    print(
        "| storage | embeddings max rel err | logits max abs diff (logit range) | mask pixels flipped | "
        "IoU pred max abs diff | mask token max abs diff | L_r | L_d |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (emb, out, terms) in results.items():
        rel = ((emb - ref_emb).abs() / ref_emb.abs().clamp_min(1e-6)).max().item()
        logit = (out.low_res_logits - ref_out.low_res_logits).abs().max().item()
        span = ref_out.low_res_logits.abs().max().item()
        flipped = ((out.low_res_logits > 0) != (ref_out.low_res_logits > 0)).float().mean().item()
        iou = (out.iou_predictions - ref_out.iou_predictions).abs().max().item()
        token = (out.mask_tokens - ref_out.mask_tokens).abs().max().item()
        lr, ld = terms["relation"].item(), terms["distill"].item()
        dlr, dld = lr - ref_terms["relation"].item(), ld - ref_terms["distill"].item()
        print(
            f"| {name} | {rel:.1e} | {logit:.1e} ({span:.1f}) | {flipped:.1e} | {iou:.1e} | {token:.1e} | "
            f"{lr:.7f} ({dlr:+.1e}) | {ld:.7f} ({dld:+.1e}) |"
        )
    print(
        f"\n{args.preset} at {args.image_size}, batch {args.batch}, {source}, "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'}, "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    sys.exit(main())
