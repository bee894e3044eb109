"""Fixtures shared by tests/ and property_tests/."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dask_client():
    """One 2-worker loopback Dask cluster for the whole session (it takes seconds to start)."""
    pytest.importorskip("distributed")
    from fpipe.testing import local_dask_client

    with local_dask_client(n_workers=2) as client:
        yield client
