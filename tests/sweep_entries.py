"""Stand-ins for the sweep's training entry, run by Ray workers in test_sweep.py (tests/ is put on their
PYTHONPATH through the driver's, which also shows that workers get it)."""
import json
import os
from pathlib import Path


def fake_entry(job):
    """By variant: ok -> exit 0; fail -> raises; crash_once -> its worker dies on the first attempt, then 0."""
    folder = Path(job.run_dirs[0]).parent
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "attempts", "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                            "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
                            "TDMPC_GLASS_PROBE": os.environ.get("TDMPC_GLASS_PROBE")}) + "\n")
    if job.variant == "crash_once" and len((folder / "attempts").read_text().splitlines()) == 1:
        os._exit(1)  # the worker process dies: Ray retries the task
    if job.variant == "fail":
        raise RuntimeError(f"boom in {job.label}")
    return 0, ""
