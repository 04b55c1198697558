"""Shared pytest configuration: hypothesis profiles.

``deadline=None`` because Numba compiles on first call; example counts are kept
small on expensive properties with per-test ``@settings``.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("REFSCORE_HYPOTHESIS_PROFILE", "ci"))
