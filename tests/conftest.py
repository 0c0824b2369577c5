import os
from pathlib import Path

import pytest

from meterseal.hil import micropython
from meterseal.host.storage import open_store

from postgres_server import postgres_server  # noqa: F401 (the session fixture)

# Plain assert scripts for both interpreters; test_micropython_lane.py runs them, pytest must not
# import them itself.
collect_ignore = ["mpy"]

SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture(scope="session")
def device_image(tmp_path_factory):
    """The gateway image (every manifest file compiled by mpy-cross), for the MicroPython port."""
    image = tmp_path_factory.mktemp("image")
    micropython.build_image(image)
    return image


@pytest.fixture(scope="session")
def shared_testdata():
    """../shared/testdata: present on developer machines and in CI, absent in a user's clone."""
    if not SHARED_TESTDATA.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{SHARED_TESTDATA} is missing; CI must have ../shared beside the clone")
        pytest.skip(f"{SHARED_TESTDATA} is absent (it ships beside the repository, not in it)")
    return SHARED_TESTDATA


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """A fresh, empty database on each storage backend: a SQLite file, and a database of its own
    on the session's PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path / 'meterseal.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    name = server.create_database()
    yield server.url(name)
    server.drop_database(name)


@pytest.fixture
def store(store_url):
    with open_store(store_url) as store:
        yield store
