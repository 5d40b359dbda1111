#!/usr/bin/python3
"""bench/muc_big.py — one group chat room with 10,000 occupants (issue 15,
"Scale": join cost and the presence flood on join, bounded and measured).

    bench/muc_big.py [--build build-release] [--occupants 10000] [--rate 2]
                     [--hold 20] [--xmppload-src ../shared/bench/xmppload.c]
                     [--presence-broadcast moderator] [--perf perf.data]

--presence-broadcast: the roles the room announces to everyone
(muc#roomconfig_presencebroadcast, through mod_muc's
default_presence_broadcast): `moderator` fills the room linearly, the
default (every role) quadratically, as every server does.

1. xmppd (the build in --build) starts on loopback with a temporary data
   directory, 2 workers, mod_muc with max_users above the occupant count.
2. The shared load driver (xmppload, compiled from --xmppload-src) registers
   N accounts in-band and brings them online into one room: `-m muc`, one
   sender at --rate groupchat messages/s while the room fills and after.
   The time until every occupant has joined and the server's RSS before and
   after give the join cost per occupant.
3. With the room full, a standard client (slixmpp and its XEP-0045 plugin,
   as a desktop client would use it) joins: the time from its join presence
   to its self-presence (status 110), the occupant presences it received
   before it (the whole list: XEP-0045 7.2.3 sends it first), and the time
   until a groupchat message it sends comes back to it through the full room.
4. The driver's own report: deliveries/s and fan-out latency to N-1
   occupants at the given rate.

--driver mucjoin: steps 2-4 are bench/mucjoin.c instead (built with the
server in --build: build-release/bench/mucjoin): it registers and logs in
the N accounts itself, fills the room at --join-rate joins/s (0: as fast as
--join-window joins in flight allow), however long that takes (the shared
driver's join phase ends at 300 s), and reports the join phase's duration,
joins/s, the server's CPU (/proc/PID/stat) and RSS per occupant; the load
average (`uptime`) is printed before and after, as the machine is shared.

Everything is stopped by PID at the end.  The figures are recorded in
docs/performance.md ("Group chat", 10,000 occupants).
"""
import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from webclient import cpu_s, free_port, rss_kib  # noqa: E402


CONFIG = """hosts: ["localhost"]
loglevel: notice
log_file: "{dir}/xmppd.log"
workers: 2
data_dir: "{dir}/data"
ctl_socket: "{dir}/ctl.sock"
listen:
  - port: {port}
    ip: "127.0.0.1"
    module: c2s
    starttls: false
    shaper: none
    max_connections: {maxconn}
allow_unencrypted_plain_auth: true
access_rules:
  register:
    - allow: all
modules:
  mod_register: {{ access: register, ip_access: all, registration_timeout: 0 }}
  mod_muc: {{ max_users: {maxusers}, default_presence_broadcast: [{pbcast}] }}
"""


async def standard_client(port, user, password, room, nick, n_expected):
    import slixmpp
    c = slixmpp.ClientXMPP(f"{user}@localhost/std", password)
    c.register_plugin("xep_0045")
    c["feature_mechanisms"].unencrypted_plain = True
    online = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: online.set_result(True))
    c.connect(("127.0.0.1", port), use_ssl=False, force_starttls=False, disable_starttls=True)
    await asyncio.wait_for(online, 60)
    muc = c.plugin["xep_0045"]
    got_back = asyncio.get_running_loop().create_future()

    def on_groupchat(m):
        if m["mucnick"] == nick and m["body"] == "hello from a standard client":
            if not got_back.done():
                got_back.set_result(time.monotonic())

    c.add_event_handler("groupchat_message", on_groupchat)
    t0 = time.monotonic()
    pres, _subject, occupants, _history = await muc.join_muc_wait(slixmpp.JID(room), nick, maxstanzas=0,
                                                                   timeout=600)
    t_self = time.monotonic() - t0
    assert 110 in pres["muc"]["status_codes"], pres
    n_list = len(occupants)
    t1 = time.monotonic()
    c.send_message(mto=room, mbody="hello from a standard client", mtype="groupchat")
    back = await asyncio.wait_for(got_back, 120)
    c.disconnect()
    return {"join_s": t_self, "occupant_presences": n_list, "echo_s": back - t1}


def load_avg():
    return open("/proc/loadavg").read().split()[:3]


def mucjoin(args, srv, port):
    """The join phase by bench/mucjoin.c (its RESULT line, with the load)."""
    drv = os.path.join(args.build, "bench", "mucjoin")
    before = load_avg()
    t0 = time.monotonic()
    r = subprocess.run([drv, "--port", str(port), "--domain", "localhost", "--register",
                        "--users", str(args.occupants), "--room", "big",
                        "--rate", str(args.join_rate), "--window", str(args.join_window),
                        "--max-seconds", str(args.max_seconds), "--pid", str(srv.pid)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    after = load_avg()
    print(f"presencebroadcast [{args.presence_broadcast}], {args.occupants} occupants, "
          f"join rate {args.join_rate or 'unpaced'}, window {args.join_window}")
    print(f"load average before {' '.join(before)}, after {' '.join(after)} "
          f"({time.monotonic() - t0:.0f} s with the logins)")
    print(next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")),
               "no RESULT (exit %d): %s" % (r.returncode, r.stderr[-2000:])))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build-release"))
    ap.add_argument("--occupants", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=2, help="groupchat msgs/s while full")
    ap.add_argument("--hold", type=float, default=20, help="seconds measured after joins")
    ap.add_argument("--xmppload-src",
                    default=os.environ.get("XMPPLOAD_SRC",
                                           os.path.join(ROOT, "..", "shared", "bench",
                                                        "xmppload.c")))
    ap.add_argument("--presence-broadcast", default="moderator,participant,visitor",
                    help="the room's muc#roomconfig_presencebroadcast (mod_muc's "
                         "default_presence_broadcast): 'moderator' announces only the room's "
                         "owner, so filling the room is linear; the default announces everyone "
                         "(quadratic)")
    ap.add_argument("--driver", choices=("xmppload", "mucjoin"), default="xmppload",
                    help="mucjoin: bench/mucjoin.c fills the room (no 300 s join limit), "
                         "join phase figures only")
    ap.add_argument("--join-rate", type=float, default=0,
                    help="mucjoin: joins/s (0: as fast as --join-window allows)")
    ap.add_argument("--join-window", type=int, default=200,
                    help="mucjoin: joins waiting for their self-presence at once")
    ap.add_argument("--max-seconds", type=float, default=3600,
                    help="mucjoin: the longest join phase")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (log)")
    ap.add_argument("--perf", metavar="FILE",
                    help="perf record the server during the hold into FILE")
    ap.add_argument("--perf-call-graph", default="dwarf,16384",
                    help="perf record --call-graph (dwarf: a release build has no frame pointers)")
    args = ap.parse_args()
    n = args.occupants
    tmp = tempfile.mkdtemp(prefix="muc-big-")
    load = os.path.join(tmp, "xmppload")
    if args.driver == "xmppload":
        subprocess.run(["cc", "-O2", "-Wall", "-o", load, args.xmppload_src, "-lssl",
                        "-lcrypto"], check=True)
    port = free_port()
    with open(os.path.join(tmp, "xmppd.yml"), "w") as f:
        f.write(CONFIG.format(dir=tmp, port=port, maxconn=n + 100, maxusers=n + 100,
                            pbcast=", ".join(args.presence_broadcast.split(","))))
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * n + 4096), hard))
    srv = subprocess.Popen([os.path.join(args.build, "xmppd"), "-c", os.path.join(tmp, "xmppd.yml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    drv = None
    try:
        log = os.path.join(tmp, "xmppd.log")
        for _ in range(300):
            if os.path.exists(log) and "xmppd ready" in open(log).read():
                break
            if srv.poll() is not None:
                sys.exit("xmppd exited at start-up: see " + log)
            time.sleep(0.1)
        if args.driver == "mucjoin":
            mucjoin(args, srv, port)
            return
        common = ["-p", str(port), "-d", "localhost", "-w", "secret", "-a", "plain"]
        subprocess.run([load, "-m", "register", "-n", str(n + 1), "-c", "50", "-L", "register"]
                       + common, check=True, stdout=subprocess.DEVNULL)
        rss0 = rss_kib(srv.pid)
        cpu0 = cpu_s(srv.pid)
        # user1..userN join; user(N+1) is the standard client
        t_start = time.monotonic()
        duration = args.hold + 60  # measured after the joins; the standard client joins in it
        drv = subprocess.Popen([load, "-m", "muc", "-n", str(n), "-c", "200", "-k", "1",
                                "-r", str(args.rate), "-t", str(duration), "-C", "big",
                                "-M", "conference.localhost", "-S", str(srv.pid), "-L", "xmppd"]
                               + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the room is full when the driver says every occupant joined
        lines = []
        threading.Thread(target=lambda: lines.extend(drv.stderr), daemon=True).start()
        joined = None
        while joined is None:
            if drv.poll() is not None:
                sys.exit("xmppload ended early:\n" + "".join(lines[-20:]))
            time.sleep(0.5)
            for line in lines:
                m = re.match(r"room \S+: joined=(\d+) join_failed=(\d+)", line)
                if m:
                    joined = int(m.group(1))
            if time.monotonic() - t_start > 900:
                sys.exit("the room did not fill in 900 s:\n" + "".join(lines[-5:]))
        t_full = time.monotonic() - t_start
        time.sleep(3)
        rss1 = rss_kib(srv.pid)
        cpu1 = cpu_s(srv.pid)
        std = asyncio.run(standard_client(port, f"user{n + 1}", "secret", "big@conference.localhost",
                                          "standard", n))
        t_hold = time.monotonic()
        if args.perf:
            subprocess.run(["perf", "record", "-q", "-F", "499", "--call-graph",
                            args.perf_call_graph, "-p", str(srv.pid),
                            "-o", args.perf, "--", "sleep", str(args.hold)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            time.sleep(args.hold)
        cpu2 = cpu_s(srv.pid)
        rss2 = rss_kib(srv.pid)
        hold_s = time.monotonic() - t_hold
        out = drv.stdout.read()
        drv.wait()
        err = "".join(lines)
        result = next((line for line in out.splitlines() if line.startswith("RESULT")), "")
        print(f"presencebroadcast [{args.presence_broadcast}]")
        print(f"occupants {joined} of {n}: all joined in {t_full:.1f} s "
              f"({n / t_full:.0f} joins/s, server CPU {cpu1 - cpu0:.1f} s, "
              f"{(cpu1 - cpu0) / n * 1e3:.2f} ms per join incl. login)")
        print(f"server RSS: {rss0 / 1024:.1f} MiB before, {rss1 / 1024:.1f} MiB with the room full "
              f"({(rss1 - rss0) / n:.1f} KiB per online occupant), {rss2 / 1024:.1f} MiB after the hold")
        print(f"standard client (slixmpp xep_0045): self-presence after {std['join_s']:.2f} s, "
              f"{std['occupant_presences']} occupant presences before it; "
              f"its message back through the room in {std['echo_s'] * 1e3:.0f} ms")
        print(f"hold {hold_s:.0f} s at {args.rate} msg/s: server CPU "
              f"{(cpu2 - cpu1) / hold_s * 100:.1f} %")
        print(f"driver: {result}")
        if err:
            print("driver stderr (last lines):\n" + "\n".join(err.splitlines()[-5:]))
    finally:
        if drv and drv.poll() is None:
            drv.kill()
            drv.wait()
        srv.send_signal(signal.SIGTERM)
        try:
            srv.wait(30)
        except subprocess.TimeoutExpired:
            srv.kill()
            srv.wait()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
