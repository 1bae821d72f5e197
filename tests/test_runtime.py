"""Process settings: the allocator switch and the bf16 capability check that training's pre-flight uses."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from infosam import runtime
from infosam.config import load_config


def test_native_bf16_reads_the_capability_flags(monkeypatch):
    for flags, expected in (
        ({"avx2": True, "avx512_bf16": False, "amx_bf16": False}, False),
        ({"avx2": True, "avx512_bf16": True}, True),
        ({"amx_bf16": True}, True),
        ({}, False),
    ):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: {"cpu_name": "X", **flags})
        assert runtime.native_bf16() is expected
        assert runtime.cpu_summary().endswith(f"native bf16: {'yes' if expected else 'no'}")


def _check(*overrides: str) -> None:
    from infosam.train.build import check_before_work

    check_before_work(load_config(None, ["model.name=tiny", "data.path=unused", *overrides]))


def test_bf16_on_a_cpu_without_bf16_instructions_is_refused_unless_allowed(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    with pytest.raises(
        ValueError, match=r"train\.precision=bf16 on this CPU .*13x slower.*allow_slow_bf16=true"
    ):
        _check("train.precision=bf16")
    _check("train.precision=bf16", "train.allow_slow_bf16=true")  # forced: goes on
    _check("train.precision=no")
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    _check("train.precision=bf16")  # native: allowed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_tune_allocator_in_a_fresh_process():
    code = (
        "from infosam import runtime\n"
        "first = runtime.tune_allocator(); second = runtime.tune_allocator()\n"
        "print(first, second)\n"
    )
    tuned = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = tuned.stdout.split()
    assert first == second  # idempotent
    if platform.libc_ver()[0] == "glibc":
        assert first == "True"
    opted_out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "INFOSAM_ALLOCATOR": "system"},
    )
    assert opted_out.stdout.split() == ["False", "False"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_release_memory_hands_freed_heap_pages_back_in_a_fresh_process():
    """128 MiB of small tensors freed below a live one stay resident (glibc keeps them in the heap) until
    release_memory trims the heap."""
    code = (
        "import torch\n"
        "from infosam import runtime\n"
        "def rss():\n"
        "    with open('/proc/self/status') as f:\n"
        "        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:')) // 1024\n"
        "held = [torch.ones(16 * 1024) for _ in range(2048)]\n"  # 64 KiB each: heap blocks, not mmaps
        "pin = torch.ones(16 * 1024)\n"  # above them: the heap's top cannot shrink past it
        "del held\n"
        "before = rss(); done = runtime.release_memory(); after = rss()\n"
        "print(done, before, after)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    done, before, after = out.stdout.split()
    if platform.libc_ver()[0] != "glibc":
        return
    assert done == "True"
    assert int(before) - int(after) > 100, out.stdout  # MiB handed back
