"""glibc ``malloc`` settings for CPU training: reuse freed activation buffers, do not refault them.

A Langevin chain (Pang, Han, Nijkamp, Zhu and Wu (2020), "Learning Latent Space Energy-Based
Prior Model", eq. 10) allocates and frees the same large activation buffers at every step.
Under glibc's defaults, blocks above the (dynamic) mmap threshold are mapped and unmapped each
time and the top of the heap is trimmed, so every step takes page faults to get zeroed pages
back from the kernel. :func:`keep_freed_memory` raises ``M_MMAP_THRESHOLD`` to glibc's maximum
(32 MiB on 64-bit) and ``M_TRIM_THRESHOLD`` to 1 GiB, so these buffers stay in the process's
heap and are reused. The process's resident memory then stays near its peak instead of
shrinking between steps; nothing else changes (no result depends on it).

``latentebm train`` calls it on Linux unless ``LATENTEBM_MALLOC=default`` is set (then glibc's
defaults stay) or the user set malloc up already (``GLIBC_TUNABLES`` or a ``MALLOC_*`` variable);
it is a no-op where ``mallopt`` is missing (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter numbers (``<malloc.h>``)."""

MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
"""glibc's largest allowed ``M_MMAP_THRESHOLD`` on 64-bit systems."""
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

ENV_VAR = "LATENTEBM_MALLOC"
"""``default`` (or ``0``/``off``): leave glibc's settings alone."""


def keep_freed_memory() -> bool:
    """Apply the settings of the module docstring; True if glibc accepted both."""
    if not sys.platform.startswith("linux"):
        return False
    if os.environ.get(ENV_VAR, "").strip().lower() in ("default", "0", "off", "false"):
        return False
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return False  # the user tuned malloc already: keep their settings
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mmap_ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    trim_ok = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
    return mmap_ok and trim_ok
