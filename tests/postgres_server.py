"""The PostgreSQL server of the storage tests: ``postgres_server``, a session fixture (one server
per test session, per xdist worker) over meterseal.host.storage.scratch_postgres, which starts a
private server from Debian's binaries in a temporary directory, on 127.0.0.1 only. Each test
gets a fresh database from ``create_database()``.

Where no server can be started (no binaries, say) the PostgreSQL tests skip with the reason,
except in CI (CI=true), where they fail: there the binaries must be installed (.ci/run).
"""

import os

import pytest

from meterseal.host.storage import scratch_postgres


@pytest.fixture(scope="session")
def postgres_server():
    reason = scratch_postgres.unavailable_reason()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run the PostgreSQL tests")
        pytest.skip(reason)
    with scratch_postgres.ScratchPostgres() as server:
        yield server
