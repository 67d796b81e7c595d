"""Method comparison on the physics world: ``physalign bench`` (see :mod:`physalign.bench.runner`), and
``physalign demo``, the base model alone sampled and scored (:mod:`physalign.bench.demo`)."""

from physalign.bench.profiles import PROFILES, Profile, get_profile
from physalign.bench.runner import BenchError, run_bench

__all__ = ["PROFILES", "Profile", "get_profile", "BenchError", "run_bench"]
