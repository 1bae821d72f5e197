"""Process-level settings that make the same maths cheaper on a CPU: the allocator, and whether bf16 pays.

- :func:`tune_allocator`: glibc's ``malloc`` hands every block above its mmap threshold (128 KiB to 32 MiB) back to
  the system when freed, so each training step's large activations (LiteMedSAM's stages 2-3 at batch 4: tensors of
  16 to 84 MB) are page-faulted and zeroed afresh, every step. Keeping freed memory in the heap (no mmap for
  allocations, no trimming) removes that work: an encoder student's warm step went from 11.0 to 9.3 CPU s on the
  project's 2-core AVX2 machine (``docs/performance.md``). Nothing numerical changes. The price is memory: freed
  blocks stay with the process, so its resident set stays at its peak and grows with fragmentation (an encoder
  grid cell's scoring reached 12.4 GB and was killed by the kernel beside a second grid process on a 24 GiB
  machine). So it is opt-in: the commands that run a model call it when ``INFOSAM_ALLOCATOR=keep`` is set (one
  process with memory to spare); library users may call it themselves (``INFOSAM_ALLOCATOR=system`` makes it a
  no-op). A no-op outside glibc.
- :func:`release_memory`: hands the heap's free pages back to the kernel (``gc.collect()``, then glibc's
  ``malloc_trim(0)``) between the phases of a run. glibc keeps freed blocks below its (dynamic, up to 32 MiB) mmap
  threshold in the heap, so after a MobileSAM Adapter + InfoSAM step at batch 4 about 1.8-2.5 GB of freed
  activations stay resident; an evaluation then maps its own large tensors beside them, so a cell's evaluation
  or scoring could peak above its training. Called before each evaluation in training and before each scoring
  of the grid runner (``docs/performance.md``: grid cell RAM). Nothing numerical changes; it costs a few
  milliseconds plus the collection.
- :func:`native_bf16`: whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16), read from
  ``torch.cpu.get_capabilities()``. Without them PyTorch emulates bf16 and autocast makes LiteMedSAM's encoder
  about 13x slower (measured), so training refuses ``train.precision: bf16`` on such a CPU unless
  ``train.allow_slow_bf16`` says to go on.
- :func:`reset_accelerate_state`: forgets accelerate's process-wide state, so a later run in the same process may
  use another precision or device.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys

import torch

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 1 << 30
_tuned: bool | None = None


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide settings (not the process group), so that a later ``Accelerator`` in this
    process may use another mixed precision or device.

    Why: ``AcceleratorState`` and ``GradientState`` keep their settings in class-level shared dicts, so the first
    ``Accelerator`` of a process fixes the mixed precision of every later one: a second :func:`infosam.train.train`
    with another ``train.precision`` would silently train under the first one's. accelerate (1.16) offers no public
    way to forget them (its own tests call these private resets), so this is the package's one call of them:
    :func:`infosam.train.train` calls it when a run ends, and tests that start runs of different precisions in one
    process call it before each.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def tune_allocator() -> bool:
    """Keep freed memory in the process heap (glibc: ``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD,
    1 GiB)``). Returns whether it is in effect; False on other C libraries or with ``INFOSAM_ALLOCATOR=system``.
    Idempotent."""
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if os.environ.get("INFOSAM_ALLOCATOR", "").strip().lower() == "system" or not sys.platform.startswith(
        "linux"
    ):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _tuned


def release_memory() -> bool:
    """Collect unreachable Python objects and return the C heap's free pages to the kernel (glibc
    ``malloc_trim(0)``), so a phase that follows (evaluation, scoring) does not stack its memory on what the
    previous one freed. Returns whether the heap was trimmed (False on other C libraries). Changes no value any
    computation sees."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (x86 AVX512-BF16 or AMX-BF16; Arm's BF16
    extension where PyTorch reports it)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return any(bool(caps.get(flag)) for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def cpu_summary() -> str:
    """One line for logs and reports: the CPU's name, PyTorch's vector capability and whether bf16 is native."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    name = caps.get("cpu_name") or "unknown CPU"
    return (
        f"{name}, {torch.backends.cpu.get_cpu_capability()}, native bf16: {'yes' if native_bf16() else 'no'}"
    )
