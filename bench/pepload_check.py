#!/usr/bin/python3
"""bench/pepload_check.py — bench/pepload.c against a fake server that is
hard on its stream splitting: everything it sends goes out in pieces of
1-7 bytes; comments, double-quoted attributes holding '>' and "'", white
space between stanzas, a session the features require; each item twice to
c1 (as Prosody sends it), and messages with foreign marks.  Checks the
counts of the RESULT line and pepload's answers (disco#info with the node
echoed, ping, service-unavailable for anything else).  Loopback only, a
free port; pepload is started and waited for here.

    bench/pepload_check.py [BUILD/bench/pepload]   (default build-release)
"""
import asyncio
import base64
import os
import random
import re
import sys

N, PUBS = 5, 20
HERE = os.path.dirname(os.path.abspath(__file__))
PEPLOAD = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(HERE), "build-release", "bench", "pepload")
HDR = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
       b"'http://etherx.jabber.org/streams' id=\"a>b'c\" from='t.test' version='1.0'>")
ATTRS = rb"""(?:[^>'"/]|'[^']*'|"[^"]*")*"""  # a start tag's attributes
random.seed(1)
conns, answers, locks = {}, [], {}


async def dribble(w, data):
    """data in 1-7 byte writes, one writer per stream at a time."""
    async with locks.setdefault(id(w), asyncio.Lock()):
        i = 0
        while i < len(data):
            k = random.randint(1, 7)
            w.write(data[i:i + k])
            await w.drain()
            i += k
            if random.random() < 0.3:
                await asyncio.sleep(0.001)


async def handle(r, w):
    buf = b""

    async def until(pat):
        nonlocal buf
        while True:
            m = re.search(pat, buf, re.S)
            if m:
                buf = buf[m.end():]
                return m
            d = await r.read(65536)
            if not d:
                raise EOFError
            buf += d
    try:
        await until(rb"<stream:stream[^>]*>")
        await dribble(w, HDR + b"<!-- a comment > with a gt --><stream:features><mechanisms"
                      b" xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>"
                      b"</mechanisms></stream:features>")
        m = await until(rb"<auth[^>]*>([^<]*)</auth>")
        user = base64.b64decode(m.group(1)).split(b"\0")[1].decode()
        await dribble(w, b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
        await until(rb"<stream:stream[^>]*>")
        await dribble(w, HDR + b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                      b"<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></stream:features>")
        await until(rb"<iq[^>]*id='b1'.*?</iq>")
        await dribble(w, f"<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                      f"<jid>{user}@t.test/x</jid></bind></iq>".encode())
        await until(rb"<iq[^>]*id='s1'.*?</iq>")
        await dribble(w, b"<iq type='result' id='s1'/> \n ")
        await until(rb"<presence.*?(/>|</presence>)")
        conns[user] = w
        if user != "pub":
            await dribble(w, b"<iq type=\"get\" id=\"d'1/>x\" from=\"t.test\"><query xmlns="
                          b"'http://jabber.org/protocol/disco#info' node=\"n'1\"/></iq>"
                          b"<iq type='get' id='p1' from='t.test'><ping xmlns='urn:xmpp:ping'/></iq>"
                          b"<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
            while True:
                m = await until(rb"<iq" + ATTRS + rb"/>|<iq" + ATTRS + rb">.*?</iq>|</stream:stream>")
                if m.group(0) == b"</stream:stream>":
                    break
                answers.append((user, m.group(0).decode()))
        else:
            seq = 0
            while True:
                m = await until(rb"<iq type='set' id='([^']+)'>.*?<title>(pb:[^<]+)</title>.*?</iq>"
                                rb"|</stream:stream>")
                if m.group(0) == b"</stream:stream>":
                    break
                iid, mark = m.group(1).decode(), m.group(2).decode()
                for u, cw in list(conns.items()):
                    if u == "pub":
                        continue
                    note = (f"<message from='pub@t.test' to='{u}@t.test/x'><event xmlns='http://"
                            f"jabber.org/protocol/pubsub#event'><items node='x'><item id=\"i>'{seq}\">"
                            f"<title>{mark}</title></item></items></event></message>").encode()
                    await dribble(cw, note * (2 if u == "c1" else 1) +
                                  b"<message><body>pb:zz:1:1 and pb:w:x</body></message>")
                seq += 1
                await dribble(w, f"<iq type='result' id='{iid}'/>".encode())
        w.write(b"</stream:stream>")
        w.close()
    except (EOFError, ConnectionError):
        w.close()


async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    p = await asyncio.create_subprocess_exec(
        PEPLOAD, "--auto", "--port", str(port), "--domain", "t.test", "--publisher", "pub",
        "--contacts", str(N), "--pubs", str(PUBS), "--tag", "rt1", "--window", "3",
        stdout=asyncio.subprocess.PIPE)
    try:
        out, _ = await asyncio.wait_for(p.communicate(), 60)
    finally:
        if p.returncode is None:
            p.kill()  # ours, by its PID
            await p.wait()
    srv.close()
    out = out.decode()
    print(out, end="")
    assert p.returncode == 0, f"pepload exited with {p.returncode}"
    res = dict(kv.split("=", 1) for kv in re.search(r"^RESULT (.*)$", out, re.M).group(1).split())
    assert res["ready"] == str(N) and res["publishes"] == str(PUBS), res
    assert res["notifications"] == res["expected"] == str(N * PUBS), res
    assert res["stanzas"] == str((N + 1) * PUBS), res  # c1's copies counted apart
    assert res["contact_min"] == res["contact_max"] == str(PUBS), res
    for i in range(1, N + 1):
        mine = [a for u, a in answers if u == f"c{i}"]
        assert len(mine) == 3, (i, mine)
        disco = [a for a in mine if "d&apos;1/>x" in a]
        assert len(disco) == 1 and "type='result'" in disco[0] and "node='n&apos;1'" in disco[0] \
            and "to='t.test'" in disco[0] and "tune+notify" in disco[0], disco
        assert any("id='p1'" in a and "type='result'" in a for a in mine), mine
        assert any("id='v1'" in a and "service-unavailable" in a for a in mine), mine
    print("pepload_check: ok")


asyncio.run(main())
