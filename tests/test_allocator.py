"""Training commands re-execute themselves under tcmalloc (experiments/allocator.py): same pid, once, not when
told otherwise."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import allocator

ROOT = Path(__file__).resolve().parents[1]
# what the process reports after asking for tcmalloc: its pid before and after, the allocator, whether mapped
PROBE = ("import os; from experiments import allocator; pid = os.environ.get('PROBE_PID') or str(os.getpid()); "
         "os.environ['PROBE_PID'] = pid; allocator.use_tcmalloc(); "
         "print(pid == str(os.getpid()), allocator.active(), 'tcmalloc' in open('/proc/self/maps').read())")


def probe(**env) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in (allocator.ENV, "LD_PRELOAD", "PROBE_PID")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**environ, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(allocator.tcmalloc_library() is None, reason="tcmalloc is not installed (libtcmalloc-minimal4)")
def test_a_training_process_replaces_itself_by_itself_under_tcmalloc():
    assert probe() == "True tcmalloc True"


def test_the_system_allocator_is_kept_when_asked():
    assert probe(**{allocator.ENV: "system"}) == "True system False"
