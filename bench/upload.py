#!/usr/bin/python3
"""bench/upload.py — HTTP File Upload (XEP-0363, issue 17): throughput of
one large file on loopback, and the server's memory while it moves.

    bench/upload.py [--build build] [--mb 100] [--runs 3]

An account asks mod_upload for a slot over c2s (plain TCP, SCRAM-SHA-256),
then PUTs a file of --mb MB (10^6 bytes) to the slot's URL from a raw
socket (the client sends from one 1 MiB buffer, so it costs nearly
nothing) and GETs it back into a discarding reader; each is timed from
the first byte sent to the last byte answered.  A thread samples the
server's RSS every 20 ms: the figure is its peak during the transfer
above the RSS before it, which shows whether a file ever sits in memory
(it must not: the PUT body streams to disk through two 256 KiB buffers,
the GET reads 256 KiB pieces as the socket drains).

The server is the build in --build, started on loopback with a temporary
data directory (on the file system of $TMPDIR: the PUT includes its fsync),
2 workers, `shaper: none`, and stopped by its PID.  Only /usr/bin/python3
and its standard library are needed.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from webclient import (RssPeak, TcpClient, free_port, http_get, http_put,  # noqa: E402
                       request_slot, rss_kib)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    size = args.mb * 1000 * 1000

    d = tempfile.mkdtemp(prefix="xd-upload-bench-")
    c2s, http = free_port(), free_port()
    cfg = os.path.join(d, "xmppd.yml")
    with open(cfg, "w") as f:
        f.write(f"hosts: [localhost]\nloglevel: warn\nlog_file: {d}/log\nworkers: 2\n"
                f"data_dir: {d}/var\nctl_socket: {d}/ctl.sock\n"
                f"listen:\n  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
                f"    starttls_required: false\n    shaper: none\n"
                f"  - port: {http}\n    ip: 127.0.0.1\n    module: http\n    shaper: none\n"
                f"modules:\n  mod_upload:\n    max_size: {size}\n")
    proc = subprocess.Popen([os.path.join(args.build, "xmppd"), "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(d, "ctl.sock")) and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        ctl = os.path.join(args.build, "xmppctl")
        subprocess.run([ctl, "--socket", f"{d}/ctl.sock", "register", "alice", "localhost",
                        "pw"], check=True, stdout=subprocess.DEVNULL)
        c = TcpClient(c2s, "alice", "pw")
        chunk = os.urandom(1 << 20)
        print(f"file: {args.mb} MB ({size} bytes), {args.runs} runs")
        for run in range(args.runs):
            put_url, hdrs, get_url = request_slot(c, "upload.localhost", f"big{run}.bin", size)
            before = rss_kib(proc.pid)
            mon = RssPeak(proc.pid)
            mon.start()
            t_put, status, _ = http_put(put_url, size, hdrs, chunk=chunk)
            mon.stop = True
            mon.join()
            assert status == 201, status
            put_peak = mon.peak - before
            before = rss_kib(proc.pid)
            mon = RssPeak(proc.pid)
            mon.start()
            t_get, status, n = http_get(get_url)
            mon.stop = True
            mon.join()
            assert status == 200 and n == size, (status, n)
            get_peak = mon.peak - before
            print(f"run {run + 1}: PUT {size / t_put / 1e6:7.1f} MB/s ({t_put:.2f} s), "
                  f"RSS +{put_peak / 1024:.1f} MiB peak;  GET {size / t_get / 1e6:7.1f} MB/s "
                  f"({t_get:.2f} s), RSS +{get_peak / 1024:.1f} MiB peak;  "
                  f"server RSS {rss_kib(proc.pid) / 1024:.1f} MiB")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
