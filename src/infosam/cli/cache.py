"""``infosam cache info|clear DIR``: inspect or explicitly empty a teacher-embedding cache folder."""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect or clear a teacher cache",
        description="Inspect or clear a teacher-embedding cache.",
    )
    sub = parser.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="show which teacher filled the cache and how many images it holds")
    info.add_argument("directory", help="cache folder (train config: cache.dir)")
    info.set_defaults(func=run_info)
    clear = sub.add_parser(
        "clear",
        help="delete the cache's files",
        description="Delete the manifest and embedding files of a teacher cache (other files are left alone).",
    )
    clear.add_argument("directory", help="cache folder (train config: cache.dir)")
    clear.set_defaults(func=run_clear)


def run_info(args: argparse.Namespace) -> int:
    from ..cache import cache_info

    info = cache_info(args.directory)
    fp = info["fingerprint"]
    spec = fp.get("spec") or {}
    weights = fp.get("weights") or {}
    print(f"teacher cache {args.directory}")
    print(f"  images: {info['images']} ({info['bytes'] / 2**20:.1f} MiB)")
    print(f"  storage dtype: {info['storage_dtype']}")
    print(f"  model: {spec.get('name')} at {spec.get('image_size')} px, compute dtype {fp.get('dtype')}")
    print(f"  weights: {json.dumps(weights) if weights else 'unknown (random initialisation)'}")
    print(f"  preprocessing: {json.dumps(fp.get('preprocessing'))}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    from ..cache import clear_teacher_cache

    print(f"removed {clear_teacher_cache(args.directory)} files from {args.directory}")
    return 0
