#!/usr/bin/python3
"""bench/storage.py — storage throughput per SQL backend, through the wire:

  registrations/s   K clients, each on new TLS streams, register accounts
                    in-band (XEP-0077): a user row and three SCRAM
                    credentials in one transaction (PBKDF2 included);
  offline writes/s  K senders pipeline M chat messages to offline contacts,
                    then a ping (answered after every store committed);
  roster loads/s    K clients pipeline N roster gets of a 100-item roster.

    bench/storage.py --build build [--backends sqlite,pgsql,mysql,odbc] [--clients 10]

pgsql runs a PostgreSQL from Debian's packages in a temporary directory
(tests/integration/pgsql.py; fsync off, as in the tests: the figure is the
server's and the driver's cost, not a disk's); odbc reaches the same
PostgreSQL through unixODBC and psqlODBC.  mysql runs a MariaDB the same
way (tests/integration/mariadb.py; InnoDB with its default durability:
innodb_flush_log_at_trx_commit=1, binary log off).  Every server is started on
loopback with a temporary directory and stopped by its PID.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from xclient import XClient, login  # noqa: E402
from xmpptest import Server  # noqa: E402

MODULES = ("modules:\n"
           "  mod_register:\n"
           "    registration_timeout: 0\n"
           "    ip_access: all\n"
           "  mod_roster:\n"
           "    max_items: 1000\n"
           "  mod_offline:\n"
           "    max_user_messages: 1000000\n"
           "    max_user_size: 1GiB\n")


def parallel(n, fn):
    errs = []

    def wrap(i):
        try:
            fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)
    ts = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return time.perf_counter() - t0


def bench_register(srv, clients, per_client):
    def one(i):
        for k in range(per_client):
            c = XClient(srv.c2s_port)
            c.open_stream()
            c.starttls()
            c.open_stream()
            c.send(f"<iq type='set' id='r'><query xmlns='jabber:iq:register'>"
                   f"<username>reg{i}x{k}</username><password>bench-pw-{i}</password>"
                   f"</query></iq>")
            m = c.recv_until(r"<iq[^>]*id=['\"]r['\"].*?(/>|</iq>)")
            assert b"result" in m.group(0), m.group(0)
            c.close()
    dt = parallel(clients, one)
    return clients * per_client / dt


def bench_offline(srv, clients, messages):
    senders = [login(srv.c2s_port, f"s{i}", "pw", resource="b")[0] for i in range(clients)]
    payloads = ["".join(f"<message to='r{i}@localhost' type='chat'><body>offline bench "
                        f"message {k}</body></message>" for k in range(messages))
                + "<iq type='get' id='done'><ping xmlns='urn:xmpp:ping'/></iq>"
                for i in range(clients)]

    def one(i):
        senders[i].send(payloads[i])
        senders[i].recv_until(r"<iq[^>]*id=['\"]done['\"]", timeout=600)
    dt = parallel(clients, one)
    for c in senders:
        c.close()
    return clients * messages / dt


def bench_roster(srv, clients, loads):
    c, _ = login(srv.c2s_port, "s0", "pw", resource="setup")
    for j in range(100):
        c.send(f"<iq type='set' id='a{j}'><query xmlns='jabber:iq:roster'>"
               f"<item jid='contact{j}@example.org' name='Contact {j}'><group>G{j % 5}</group>"
               f"</item></query></iq>")
    c.recv_until(r"<iq[^>]*id=['\"]a99['\"]", timeout=120)
    c.close()
    clients = min(clients, 8)  # sessions of one account are limited
    readers = [login(srv.c2s_port, "s0", "pw", resource=f"r{i}")[0] for i in range(clients)]
    payload = "".join(f"<iq type='get' id='g{k}'><query xmlns='jabber:iq:roster'/></iq>"
                      for k in range(loads))

    def one(i):
        readers[i].send(payload)
        readers[i].recv_until(rf"<iq[^>]*id=['\"]g{loads - 1}['\"].*?</iq>", timeout=600)
    dt = parallel(clients, one)
    for r in readers:
        r.close()
    return clients * loads / dt


def run(build, backend, args, pg, my):
    tmp = tempfile.mkdtemp(prefix=f"xd-storage-bench-{backend}-")
    sql = ""
    pool = f"sql_pool_size: {args.pool}\n"
    if backend == "pgsql":
        sql = pg.yaml(pg.new_database(), pool)
    elif backend == "odbc":
        sql = pg.odbc_yaml(pg.new_database(), pool)
    elif backend == "mysql":
        sql = my.yaml(my.new_database(), pool)
    srv = Server(os.path.abspath(build), tmp, workers=args.workers,
                 extra_yaml=f"pool_threads: {args.pool}\n" + MODULES + sql)
    with open(srv.config_path) as f:  # the tests' debug log would dominate
        conf = f.read().replace("loglevel: debug", "loglevel: notice")
    with open(srv.config_path, "w") as f:
        f.write(conf)
    try:
        srv.start()
        for i in range(args.clients):
            for u in (f"s{i}", f"r{i}"):
                r = srv.ctl_run("register", u, "localhost", "pw")
                assert r.returncode == 0, r.stderr
        reg = bench_register(srv, args.clients, args.registrations)
        off = bench_offline(srv, args.clients, args.messages)
        ros = bench_roster(srv, args.clients, args.loads)
        return reg, off, ros
    except Exception:
        print("\n".join(ln for ln in srv.log_text().splitlines()
                        if "level=warn" in ln or "level=error" in ln)[-3000:], file=sys.stderr)
        raise
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--backends", default="sqlite,pgsql,mysql")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--registrations", type=int, default=20, help="per client")
    ap.add_argument("--messages", type=int, default=500, help="per client")
    ap.add_argument("--loads", type=int, default=100, help="roster gets per client")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pool", type=int, default=4)
    args = ap.parse_args()
    pg = my = None
    backends = args.backends.split(",")
    if "pgsql" in backends or "odbc" in backends:
        import pgsql
        why = pgsql.odbc_available() if "odbc" in backends else pgsql.available()
        if why:
            sys.exit("pgsql: " + why)
        pg = pgsql.PgServer()
        pg.init()
        pg.start()
        pg.setup_role()
    if "mysql" in backends:
        import mariadb
        if not mariadb.available():
            sys.exit("mysql: mariadb-server is not installed (scripts/deps)")
        my = mariadb.MariaDB()
        my.start()
        my.setup_db()
    try:
        print(f"{'backend':8} {'registrations/s':>16} {'offline writes/s':>17} "
              f"{'roster loads/s':>15}")
        for b in backends:
            reg, off, ros = run(args.build, b, args, pg, my)
            print(f"{b:8} {reg:16.1f} {off:17.1f} {ros:15.1f}", flush=True)
    finally:
        if pg:
            pg.cleanup()
        if my:
            my.cleanup()


if __name__ == "__main__":
    main()
