import os
from pathlib import Path

# CPU only, and a persistent XLA compilation cache shared by the test process and the training
# subprocesses it starts: most of a tiny run's time is compilation, and the cache removes the repeats.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".jax_cache"))
