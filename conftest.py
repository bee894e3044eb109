"""Fixtures shared by tests/ and property_tests/."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

# Shared 2-core CI machines are slow and noisy: no per-example deadline, no "too slow"
# health check. A failure prints the blob that reproduces it (@reproduce_failure).
settings.register_profile(
    "fpipe", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("fpipe")


@pytest.fixture(scope="session")
def dask_client():
    """One 2-worker loopback Dask cluster for the whole session (it takes seconds to start)."""
    pytest.importorskip("distributed")
    from fpipe.testing import local_dask_client

    with local_dask_client(n_workers=2) as client:
        yield client
