"""``infosam info``: parameter counts of a SAM student (per part, all and trainable) without any checkpoint.

ViT models are built on PyTorch's ``meta`` device: shapes only, no memory and no weight initialisation, so even
ViT-H answers in about a second. TinyViT models (10M parameters) are built on the CPU: the packages' constructors
cannot run on the meta device. The last column counts every tensor element the base model's weights file holds for the part
(parameters plus persistent buffers such as BatchNorm statistics), the numbers LiteMedSAM's release quotes.
"""

from __future__ import annotations

import argparse
import json

from infosam.sam.specs import SPECS

_LABELS = {
    "image_encoder": "image encoder",
    "prompt_encoder": "prompt encoder",
    "mask_decoder": "mask decoder",
    "total": "total (SAM)",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="parameter counts of a PEFT student, per SAM part",
        description=(
            "Print all and trainable parameter counts of SAM with PEFT applied (image encoder, prompt encoder, "
            "mask decoder, total) and the size of InfoSAM's relation module. Needs no checkpoint."
        ),
        epilog="example: infosam info --model vit_b --peft adapter+decoder --set-peft adapter.init=torch",
    )
    parser.add_argument(
        "--model", default="vit_b", choices=sorted(SPECS), help="SAM architecture (default vit_b)"
    )
    parser.add_argument(
        "--peft",
        default="adapter+decoder",
        help="PEFT method(s) joined by '+', from: decoder, bitfit, adapter, adaptformer, lora "
        "(default adapter+decoder, the paper's InfoSAM student)",
    )
    parser.add_argument(
        "--set-peft",
        action="append",
        default=[],
        metavar="METHOD.OPTION=VALUE",
        help="set one PEFT option (repeatable), value read as YAML: adapter.init=torch, adapter.first_block=0, "
        "adaptformer.bottleneck=32, lora.r=8, lora.use_dora=true, lora.target_modules=[qkv,proj]",
    )
    parser.add_argument("--json", action="store_true", help="print the table as JSON instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, peft) happen here, not at registration, so `infosam --help` and other commands stay fast.
    from infosam.model import student_parameters
    from infosam.peft import parse_option_assignments

    info = student_parameters(args.model, args.peft, parse_option_assignments(args.set_peft))
    table, relation_count = info["parameters"], info["relation_module"]
    if args.json:
        out = {k: info[k] for k in ("model", "peft", "parameters", "relation_module", "base_parameters")}
        if info["release_head"]:
            out["release_parameters"] = info["base_parameters"] + info["release_head"]
        print(json.dumps(out, indent=2))
        return 0
    peft = info["peft"]
    print(f"SAM {args.model}, PEFT {'+'.join(peft['methods'])}")
    for method, opts in peft["options"].items():
        if opts:
            print(f"  {method}: " + ", ".join(f"{k}={v}" for k, v in opts.items()))
    print(f"{'part':<18}{'all':>14}{'trainable':>14}{'base weights':>18}")
    labels = dict(_LABELS)
    if "other" in table:  # SAM 2: the video memory path, never run on images, before the total
        labels = {k: v for k, v in _LABELS.items() if k != "total"} | {
            "other": "memory (video)",
            "total": "total",
        }
    for key, label in labels.items():
        print(f"{label:<18}{table[key]['all']:>14,}{table[key]['trainable']:>14,}{table[key]['stored']:>18,}")
    c = info["prompt_embed_dim"]
    print(
        f"{'relation module':<18}{relation_count:>14,}{relation_count:>14,}  (C={c}; trains, dropped at inference)"
    )
    if info["release_head"]:
        base, head = info["base_parameters"], info["release_head"]
        print(
            f"release model: {base + head:,} parameters = SAM's {base:,} (before PEFT) + {head:,} in TinyViT's "
            "ImageNet classifier head, which SAM never runs (stored in the release file, not built here)"
        )
    return 0
