"""``local_dask_client``: a small loopback Dask cluster for tests (the ``dask`` extra)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["local_dask_client"]


@contextmanager
def local_dask_client(n_workers: int = 2) -> Iterator[Any]:
    """A ``distributed.Client`` on a loopback-only ``LocalCluster`` of worker processes
    (one thread each, no dashboard), closed on exit. Needs the ``dask`` extra.

    ``with local_dask_client() as client: pipeline.run(32, executor=client)``
    """
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "local_dask_client needs dask.distributed: pip install 'fpipe-ml[dask]'"
        ) from exc
    with (
        distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken (a warning)
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
