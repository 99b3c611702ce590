"""Training processes run under tcmalloc when it is installed: XLA:CPU's temporary buffers without page faults.

XLA:CPU allocates every execution's temporary buffers afresh. glibc serves blocks over 32 MB (its largest mmap
threshold) with a fresh mmap and unmaps them on free, so each call touches new pages: the `base` model's update
faults in ~230 MB per call (56k page faults, ~50 ms of a ~340 ms update on a 2-core CPU), while the same update
inside a lax.scan allocates once. tcmalloc keeps freed blocks for reuse, and a lone update then costs what it
costs inside a scan (measured: 27 faults per call). Results are identical; only the allocator changes.

`use_tcmalloc(argv)` replaces the process by itself (os.execve: same pid, so run locks and signals are
unaffected) with tcmalloc preloaded, once. TDMPC_GLASS_MALLOC=system keeps glibc's malloc. Without the library
(Debian/Ubuntu package libtcmalloc-minimal4) it does nothing: training is only slower on the CPU.
"""
from __future__ import annotations

import ctypes.util
import os
import sys
from typing import Optional

ENV = "TDMPC_GLASS_MALLOC"  # "system": keep glibc; set to "tcmalloc" by the re-exec so it happens once
LIBRARIES = ("tcmalloc_minimal", "tcmalloc")


def tcmalloc_library() -> Optional[str]:
    """The installed tcmalloc's soname (the dynamic loader finds it), or None."""
    for name in LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def active() -> str:
    """Which allocator this process runs under: "tcmalloc" or "system" (for benchmark records)."""
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "system"


def use_tcmalloc() -> None:
    """Re-execute this process under tcmalloc unless it already runs under it, was told not to, or lacks it."""
    if os.environ.get(ENV) or active() == "tcmalloc":
        return
    library = tcmalloc_library()
    if library is None:
        return
    env = dict(os.environ)
    env[ENV] = "tcmalloc"
    env["LD_PRELOAD"] = " ".join(filter(None, (library, env.get("LD_PRELOAD"))))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
