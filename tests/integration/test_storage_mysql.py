"""The MariaDB/MySQL ("mysql") and ODBC ("odbc") storage drivers against real
servers started from Debian's packages: a MariaDB (mariadb.py) and a
PostgreSQL reached through psqlODBC (odbc_pg.py).

Two levels:
  - driver level: tests/unit/test_storage_net (cmocka) run against each
    server through xd_db_open, the users API, typed values, transactions,
    errors, killed connections;
  - through the wire: xmppd with sql_type mysql / odbc, in-band
    registration, SASL login, roster, and the database restarting under it.

The dialect layer (per-dialect migrations) is not in this branch: the
tables are created here in each server's dialect (CORE_MYSQL, CORE_PGSQL:
the DDL the dialect layer must produce) and recorded in schema_version, so
xd_db_open finds them migrated.  What still fails because of module SQL is
marked xfail with the reason.
"""
import os
import re
import signal
import subprocess

import pytest

from conftest import build_dir
from mariadb import mariadb_server  # noqa: F401  (fixture)
from odbc_pg import odbc_pg_server  # noqa: F401  (fixture)
from xmpptest import free_port

# core/1 and core/2 of src/storage/migrate.c in MariaDB's dialect: TEXT in a
# key becomes VARCHAR(n) (InnoDB keys: at most 3072 bytes, 4 bytes a
# character in utf8mb4), SQLite's 64-bit INTEGER becomes BIGINT.
CORE_MYSQL = """
CREATE TABLE schema_version (component VARCHAR(191) NOT NULL PRIMARY KEY,
  version BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE users (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  created_at BIGINT NOT NULL, PRIMARY KEY (host, username));
CREATE TABLE user_scram (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  hash VARCHAR(16) NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256', 'SHA-512')),
  salt BLOB NOT NULL, iterations BIGINT NOT NULL CHECK (iterations > 0),
  stored_key BLOB NOT NULL, server_key BLOB NOT NULL,
  PRIMARY KEY (host, username, hash),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
CREATE TABLE fast_tokens (host VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,
  client VARCHAR(255) NOT NULL, slot BIGINT NOT NULL CHECK (slot IN (0, 1)),
  token_hash BLOB NOT NULL, mechanism TEXT NOT NULL, expires_at BIGINT NOT NULL,
  replay_count BIGINT NOT NULL, PRIMARY KEY (host, username, client, slot),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
INSERT INTO schema_version VALUES ('core', 2, 0);
"""

# The same in PostgreSQL's dialect: BLOB is BYTEA, INTEGER is BIGINT.
CORE_PGSQL = """
CREATE TABLE schema_version (component TEXT NOT NULL PRIMARY KEY,
  version BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE TABLE users (host TEXT NOT NULL, username TEXT NOT NULL,
  created_at BIGINT NOT NULL, PRIMARY KEY (host, username));
CREATE TABLE user_scram (host TEXT NOT NULL, username TEXT NOT NULL,
  hash TEXT NOT NULL CHECK (hash IN ('SHA-1', 'SHA-256', 'SHA-512')),
  salt BYTEA NOT NULL, iterations BIGINT NOT NULL CHECK (iterations > 0),
  stored_key BYTEA NOT NULL, server_key BYTEA NOT NULL,
  PRIMARY KEY (host, username, hash),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
CREATE TABLE fast_tokens (host TEXT NOT NULL, username TEXT NOT NULL,
  client TEXT NOT NULL, slot BIGINT NOT NULL CHECK (slot IN (0, 1)),
  token_hash BYTEA NOT NULL, mechanism TEXT NOT NULL, expires_at BIGINT NOT NULL,
  replay_count BIGINT NOT NULL, PRIMARY KEY (host, username, client, slot),
  FOREIGN KEY (host, username) REFERENCES users (host, username) ON DELETE CASCADE);
INSERT INTO schema_version VALUES ('core', 2, 0);
"""


def unit_binary():
    path = os.path.join(build_dir(), "tests", "unit", "test_storage_net")
    if not os.path.exists(path):
        pytest.skip("test_storage_net is not built")
    return path


def run_unit(env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    r = subprocess.run([unit_binary()], env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "[  PASSED  ]" in out, out
    skipped = sorted(set(re.findall(r"\[  SKIPPED \] (test_\S+)", out)))
    return out, skipped


@pytest.fixture
def mysql_db(mariadb_server):
    mariadb_server.recreate_db()
    mariadb_server.sql(CORE_MYSQL, mariadb_server.database)
    return mariadb_server


@pytest.fixture
def pg_db(odbc_pg_server):
    odbc_pg_server.recreate_db()
    odbc_pg_server.sql(CORE_PGSQL)
    return odbc_pg_server


def test_mysql_driver_unit(mysql_db):
    dead = "host=127.0.0.1 port=%d user=x password=y dbname=z connect_timeout=2" % free_port()
    out, skipped = run_unit({"XD_TEST_DB_DRIVER": "mysql",
                             "XD_TEST_DB_CONNINFO": mysql_db.conninfo(),
                             "XD_TEST_DB_DIALECT": "mysql",
                             "XD_TEST_DB_DEAD_CONNINFO": dead})
    assert skipped == [], out


def test_mysql_driver_unit_socket(mysql_db):
    """host=/path is the server's Unix socket."""
    out, skipped = run_unit({"XD_TEST_DB_DRIVER": "mysql",
                             "XD_TEST_DB_CONNINFO": mysql_db.conninfo(host=mysql_db.socket),
                             "XD_TEST_DB_DIALECT": "mysql"})
    assert "test_net__unreachable" in skipped, out


def test_odbc_driver_unit(pg_db):
    dead = ("Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=%d;Database=x;UID=x;PWD=y"
            % free_port())
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lsan-psqlodbc.supp")
    out, skipped = run_unit({"LSAN_OPTIONS": "suppressions=" + supp,
                             "XD_TEST_DB_DRIVER": "odbc",
                             "XD_TEST_DB_CONNINFO": pg_db.odbc_conninfo(),
                             "XD_TEST_DB_DIALECT": "pgsql",
                             "XD_TEST_DB_DEAD_CONNINFO": dead})
    assert skipped == ["test_net__lock_wait_is_busy"], out
