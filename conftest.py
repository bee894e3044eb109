"""Fixtures shared by tests/ and property_tests/."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# Shared 2-core CI machines are slow and noisy: no per-example deadline, no "too slow"
# health check. A failure prints the blob that reproduces it (@reproduce_failure).
settings.register_profile(
    "fpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
# CI's second pytest pass (scripts/test.sh: `-m slow --hypothesis-profile=slow`) runs the
# tests marked slow under this profile. A property that sets no max_examples gets 1,000
# there; one with a budget of its own chooses it by the profile, e.g. `max_examples=300 if
# settings.default.max_examples >= 1000 else 25` (`budget` in test_lose_nothing.py).
settings.register_profile("slow", settings.get_profile("fpipe"), max_examples=1000)
settings.load_profile("fpipe")


@pytest.fixture(scope="session")
def dask_client():
    """One 2-worker loopback Dask cluster for the whole session (it takes seconds to start)."""
    pytest.importorskip("distributed")
    from fpipe.testing import local_dask_client

    with local_dask_client(n_workers=2) as client:
        yield client
