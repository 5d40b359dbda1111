"""pytest fixtures that run a real xmppd on loopback.

Every test that asks for `server` gets an xmppd of its own: a temporary
directory with a generated xmppd.yml, free loopback ports, two workers (so
cross-worker paths always run) and its own data directory.  The fixture
waits until the server logs that it is ready, and afterwards always stops it
by its PID: SIGTERM, then SIGKILL after a grace period.  When the test failed,
the server's log is printed so the failure can be read without a rerun.
"""
import os
import signal
import socket
import subprocess
import time

import pytest

from xmpptest import Server, free_port, have_ipv6

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_dir():
    return os.environ.get("XMPPD_BUILD", os.path.join(ROOT, "build-test"))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running test, skipped in the TSan pass")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def server_factory(request, tmp_path):
    """Returns start(**options) → Server; all started servers are stopped."""
    started = []

    def start(**kw):
        srv = Server(build_dir(), tmp_path / f"srv{len(started)}", **kw)
        started.append(srv)
        srv.start()
        return srv

    yield start

    failed = any(getattr(request.node, "rep_" + w, None) is not None
                 and getattr(request.node, "rep_" + w).failed for w in ("setup", "call"))
    problems = []
    for srv in started:
        rc = srv.stop()
        if srv.expect_clean_exit and rc != 0:
            problems.append(f"xmppd exited with {rc} (expected 0 after SIGTERM)")
        san = srv.sanitizer_report()
        if san:
            problems.append("sanitizer report:\n" + san)
        if failed or problems:
            print(f"\n----- xmppd log ({srv.dir}) -----\n{srv.log_text()}")
    if problems:
        pytest.fail("\n".join(problems))


@pytest.fixture
def server(server_factory):
    return server_factory()


# ---- storage backends ----------------------------------------------------------------------
#
# The storage suite (test_storage.py) runs once per backend.  A backend is a
# name in STORAGE_BACKENDS and a branch in `storage_yaml` that returns the
# sql_* lines of an xmppd.yml for a fresh, empty database; a backend that
# cannot run here is skipped with the reason.  To add one: append its name
# and give it a session fixture like `pg_server` or `mariadb_server`.

STORAGE_BACKENDS = ["sqlite", "pgsql", "mysql", "odbc"]


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL for the session (tests/integration/pgsql.py)."""
    import pgsql
    why = pgsql.available()
    if why:
        pytest.skip(why)
    pg = pgsql.PgServer()
    try:
        pg.init()
        pg.start()
        pg.setup_role()
        yield pg
    finally:
        pg.cleanup()


@pytest.fixture(scope="session")
def mariadb_server():
    """One MariaDB for the session (tests/integration/mariadb.py)."""
    import mariadb
    if not mariadb.available():
        pytest.skip("mariadb-server is not installed (scripts/deps)")
    db = mariadb.MariaDB()
    try:
        db.start()
        db.setup_db()
        yield db
    finally:
        db.cleanup()


def _backend_params(names):
    """The backends as fixture parameters: MariaDB and ODBC are marked slow,
    so the ThreadSanitizer pass (not slow) runs the storage code's threading
    on sqlite and pgsql only; the AddressSanitizer pass runs all four."""
    return [pytest.param(b, marks=pytest.mark.slow) if b in ("mysql", "odbc") else b
            for b in names]


@pytest.fixture(params=_backend_params(STORAGE_BACKENDS))
def storage_yaml(request):
    """Returns yaml(extra="") → the sql_* configuration of a new empty
    database on the backend request.param."""
    backend = request.param
    if backend == "sqlite":
        yield lambda extra="": extra
    elif backend == "pgsql":
        pg = request.getfixturevalue("pg_server")
        yield lambda extra="": pg.yaml(pg.new_database(), extra)
    elif backend == "mysql":
        my = request.getfixturevalue("mariadb_server")
        yield lambda extra="": my.yaml(my.new_database(), extra)
    elif backend == "odbc":
        import pgsql
        why = pgsql.odbc_available()
        if why:
            pytest.skip(why)
        pg = request.getfixturevalue("pg_server")
        # psqlODBC loses a few bytes of its own per connection
        # (lsan-psqlodbc.supp): only allocations inside it are suppressed.
        supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-psqlodbc.supp")
        mp = request.getfixturevalue("monkeypatch")
        old = os.environ.get("LSAN_OPTIONS", "")
        mp.setenv("LSAN_OPTIONS", (old + ":" if old else "") + "suppressions=" + supp)
        yield lambda extra="": pg.odbc_yaml(pg.new_database(), extra)
    else:
        pytest.skip(f"storage backend {backend} not set up")
