"""HTTP File Upload (XEP-0363, src/mod/mod_upload.c and upload_http.c)
through the wire: the service's disco, slot requests and their refusals
(too large, content type, quota, access), PUT with the slot's token (size,
type, second PUT, bad and expired tokens), GET and HEAD with ranges, the
expiry (`xmppctl upload_expire`), account removal, file names that try
to leave the upload directory, and slixmpp's XEP-0363 plugin uploading a
file that a raw GET then reads back."""
import asyncio
import os
import re
import sqlite3
import time
import urllib.parse

import pytest

from helpers import expect, iq, online, q, reply, users
from wstest import connect, read_response
from xmpptest import free_port, run_slixmpp

NS = "urn:xmpp:http:upload:0"
UP = "upload.localhost"


def start(server_factory, opts="", http_opts="", extra="", **kw):
    """An xmppd with c2s, an http listener (srv.http_port) and mod_upload."""
    port = free_port()
    c2s = free_port()
    listen = (f"  - port: {c2s}\n    ip: 127.0.0.1\n    module: c2s\n"
              f"  - port: {port}\n    ip: 127.0.0.1\n    module: http\n{http_opts}")
    mod = "".join(f"    {line}\n" for line in opts.splitlines() if line.strip())
    extra_yaml = ("modules:\n  mod_disco: {}\n  mod_roster: {}\n  mod_register: {}\n"
                  f"  mod_upload:{' {}' if not mod else ''}\n{mod}{extra}")
    srv = server_factory(listen=listen, extra_yaml=extra_yaml, **kw)
    srv.http_port = port
    srv.c2s_port = c2s
    return srv


def request_slot(c, name, size, ctype=None, rid="s1"):
    t = f" content-type='{ctype}'" if ctype else ""
    return iq(c, rid, f"<request xmlns='{NS}' filename='{name}' size='{size}'{t}/>",
              typ="get", to=UP)


def slot_urls(answer):
    put = re.search(r"<put url='([^']*)'", answer)
    get = re.search(r"<get url='([^']*)'", answer)
    assert put and get, answer
    unesc = lambda s: s.replace("&amp;", "&")
    return unesc(put.group(1)), unesc(get.group(1))


def http(srv, method, url, body=b"", headers="", length=None, sock=None):
    """One request; returns (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    assert u.port == srv.http_port, url
    target = u.path + (f"?{u.query}" if u.query else "")
    n = len(body) if length is None else length
    cl = f"Content-Length: {n}\r\n" if method in ("PUT", "POST") else ""
    raw = (f"{method} {target} HTTP/1.1\r\nHost: localhost:{srv.http_port}\r\n{cl}{headers}"
           "\r\n").encode() + body
    s = sock or connect(srv.http_port)
    s.sendall(raw)
    if method == "HEAD":
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            assert d, buf
            buf += d
        head = buf.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in head[1:])}
        s.close()
        return int(head[0].split()[1]), hdrs, b""
    st, hdrs, data = read_response(s)
    if not sock:
        s.close()
    return st, hdrs, data


def stored_files(srv):
    root = os.path.join(srv.data_dir, "upload")
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f != ".secret"]
    return out


def test_disco_lists_the_service_with_its_limit(server_factory):
    srv = start(server_factory, "max_size: 1MiB")
    users(srv, "alice")
    c, _ = online(srv, "alice")
    items = iq(c, "i1", "<query xmlns='http://jabber.org/protocol/disco#items'/>", typ="get",
               to="localhost")
    assert f"jid='{UP}'" in items
    info = iq(c, "i2", "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
              to=UP)
    assert "<identity category='store' type='file'" in info
    assert f"<feature var='{NS}'/>" in info
    assert (f"<field var='FORM_TYPE' type='hidden'><value>{NS}</value></field>"
            in info)
    assert "<field var='max-file-size'><value>1048576</value></field>" in info


def test_put_then_get_head_and_ranges(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = bytes(range(256)) * 40  # 10240 bytes
    put, get = slot_urls(request_slot(c, "notes.txt", len(data), "text/plain"))
    assert put.startswith(f"http://localhost:{srv.http_port}/upload/localhost/")
    assert get.endswith("/notes.txt") and "token=" in put and "token=" not in get
    st, h, _ = http(srv, "PUT", put, data, "Content-Type: text/plain\r\n")
    assert st == 201
    # A second PUT to the same slot is a conflict.
    st, _, _ = http(srv, "PUT", put, data, "Content-Type: text/plain\r\n")
    assert st == 409
    st, h, body = http(srv, "GET", get)
    assert st == 200 and body == data
    assert h["content-type"] == "text/plain"
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-disposition"].startswith("attachment")
    assert h["accept-ranges"] == "bytes"
    st, h, body = http(srv, "HEAD", get)
    assert st == 200 and h["content-length"] == str(len(data)) and body == b""
    st, h, body = http(srv, "GET", get, headers="Range: bytes=100-199\r\n")
    assert st == 206 and body == data[100:200]
    assert h["content-range"] == f"bytes 100-199/{len(data)}"
    st, h, body = http(srv, "GET", get, headers="Range: bytes=-10\r\n")
    assert st == 206 and body == data[-10:]
    st, h, body = http(srv, "GET", get, headers="Range: bytes=10000-\r\n")
    assert st == 206 and body == data[10000:]
    st, h, _ = http(srv, "GET", get, headers=f"Range: bytes={len(data)}-\r\n")
    assert st == 416 and h["content-range"] == f"bytes */{len(data)}"
    # Keep-alive: two GETs on one connection.
    s = connect(srv.http_port)
    assert http(srv, "GET", get, sock=s)[2] == data
    assert http(srv, "GET", get, headers="Range: bytes=0-0\r\n", sock=s)[2] == data[:1]
    s.close()


def test_media_is_inline_and_large_file_streams(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = os.urandom(3 * 1024 * 1024 + 17)  # several writes and reads
    put, get = slot_urls(request_slot(c, "photo.jpg", len(data), "image/jpeg"))
    assert http(srv, "PUT", put, data, "Content-Type: image/jpeg\r\n")[0] == 201
    st, h, body = http(srv, "GET", get)
    assert st == 200 and body == data
    assert h["content-type"] == "image/jpeg" and "content-disposition" not in h


def test_too_large_and_content_types(server_factory):
    srv = start(server_factory, "max_size: 1000\ncontent_types: [image/*, text/plain]")
    users(srv, "alice")
    c, _ = online(srv, "alice")
    a = request_slot(c, "big.png", 1001, "image/png")
    assert "type='error'" in a and "<not-acceptable" in a
    assert (f"<file-too-large xmlns='{NS}'><max-file-size>1000</max-file-size>"
            "</file-too-large>") in a
    a = request_slot(c, "ok.png", 1000, "image/png", rid="s2")
    assert "<slot" in a
    a = request_slot(c, "x.exe", 10, "application/x-msdownload", rid="s3")
    assert "type='error'" in a and "<not-acceptable" in a
    for rid, bad in (("s4", "size='-1'"), ("s5", "size='abc'"), ("s6", "size='0'")):
        a = iq(c, rid, f"<request xmlns='{NS}' filename='a.txt' {bad}/>", typ="get", to=UP)
        assert "<bad-request" in a, a
    a = request_slot(c, "a.txt", 5, "text", rid="s7")
    assert "<bad-request" in a


def test_quota_counts_stored_files(server_factory):
    srv = start(server_factory, "user_quota: 1000")
    users(srv, "alice", "bob")
    c, _ = online(srv, "alice")
    put, _ = slot_urls(request_slot(c, "a.bin", 600))
    assert http(srv, "PUT", put, b"x" * 600)[0] == 201
    a = request_slot(c, "b.bin", 401, rid="s2")
    assert "<resource-constraint" in a and "quota exceeded" in a
    a = request_slot(c, "b.bin", 400, rid="s3")
    assert "<slot" in a
    # Unfilled slots count while they may still be filled.
    a = request_slot(c, "c.bin", 1, rid="s4")
    assert "<resource-constraint" in a
    # Another account has its own quota.
    b, _ = online(srv, "bob")
    assert "<slot" in request_slot(b, "d.bin", 1000)


def test_access_rule_and_remote_users(server_factory):
    srv = start(server_factory, "access: uploaders",
                extra="acl:\n  up:\n    user: alice\naccess_rules:\n  uploaders:\n    allow: up\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    assert "<slot" in request_slot(a, "x.txt", 3)
    r = request_slot(b, "x.txt", 3)
    assert "type='error'" in r and "<forbidden" in r


def test_put_checks_size_type_and_token(server_factory):
    srv = start(server_factory, "put_timeout: 2s")
    users(srv, "alice")
    c, _ = online(srv, "alice")
    put, get = slot_urls(request_slot(c, "a.txt", 5, "text/plain"))
    assert http(srv, "PUT", put, b"12345678", "Content-Type: text/plain\r\n")[0] == 400
    st, _, body = http(srv, "PUT", put, b"12345", "Content-Type: text/html\r\n")
    assert st == 400 and b"Content-Type" in body
    bad = re.sub(r"token=(\d+)-([0-9a-f])", lambda m: f"token={m.group(1)}-"
                 f"{'0' if m.group(2) != '0' else '1'}", put)
    assert http(srv, "PUT", bad, b"12345", "Content-Type: text/plain\r\n")[0] == 403
    # A later expiry with the same MAC is refused as well.
    later = re.sub(r"token=(\d+)-", lambda m: f"token={int(m.group(1)) + 3600}-", put)
    assert http(srv, "PUT", later, b"12345", "Content-Type: text/plain\r\n")[0] == 403
    assert http(srv, "PUT", put.split("?")[0], b"12345")[0] == 403
    assert http(srv, "GET", get)[0] == 404  # nothing stored by the refused PUTs
    assert stored_files(srv) == []
    # A PUT without a Content-Length.
    u = urllib.parse.urlsplit(put)
    s = connect(srv.http_port)
    s.sendall((f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\n"
               "Transfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n0\r\n\r\n").encode())
    assert read_response(s)[0] == 411
    s.close()
    # The token expires after put_timeout.
    m = re.search(r"token=(\d+)-", put)
    while time.time() <= int(m.group(1)) + 1:
        time.sleep(0.2)
    assert http(srv, "PUT", put, b"12345", "Content-Type: text/plain\r\n")[0] == 403
    assert http(srv, "GET", get)[0] == 404


def test_unknown_paths_are_404(server_factory):
    srv = start(server_factory)
    base = f"http://localhost:{srv.http_port}/upload"
    for path in ("", "/", "/localhost", "/localhost/short/a.txt",
                 "/localhost/AAAAAAAAAAAAAAAAAAAA/..", "/localhost/AAAAAAAAAAAAAAAAAAAA/.secret",
                 "/localhost/AAAAAAAAAAAAAAAAAAAA/a%2Fb", "/localhost/AAAAAAAAAAAAAAAAAAAA/a.txt",
                 "/nohost/AAAAAAAAAAAAAAAAAAAA/a.txt", "/localhost/../../etc/passwd"):
        assert http(srv, "GET", base + path)[0] == 404, path
    assert http(srv, "DELETE", base + "/localhost/AAAAAAAAAAAAAAAAAAAA/a.txt")[0] == 405


def test_path_traversal_in_filename_is_harmless(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    for i, name in enumerate(("../../../evil.txt", "..", "/etc/passwd", "a\\..\\b.txt",
                              ".hidden", "x&lt;y&gt;.txt")):
        put, get = slot_urls(request_slot(c, name, 4, "text/plain", rid=f"s{i}"))
        seg = urllib.parse.unquote(get.rsplit("/", 1)[1])
        assert "/" not in seg and not seg.startswith(".") and seg not in ("", ".", "..")
        assert http(srv, "PUT", put, b"data", "Content-Type: text/plain\r\n")[0] == 201
        assert http(srv, "GET", get)[2] == b"data"
    root = os.path.realpath(os.path.join(srv.data_dir, "upload"))
    files = stored_files(srv)
    assert len(files) == 6
    for f in files:
        assert os.path.realpath(f).startswith(root + "/")
        assert os.path.dirname(os.path.dirname(os.path.realpath(f))) == root
    assert not os.path.exists(os.path.join(srv.data_dir, "evil.txt"))


def test_utf8_name_round_trip(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    put, get = slot_urls(request_slot(c, "фото отпуск.txt", 2, "text/plain"))
    assert get.endswith("/%D1%84%D0%BE%D1%82%D0%BE_%D0%BE%D1%82%D0%BF%D1%83%D1%81%D0%BA.txt")
    assert http(srv, "PUT", put, b"ok", "Content-Type: text/plain\r\n")[0] == 201
    st, h, body = http(srv, "GET", get)
    assert st == 200 and body == b"ok"
    assert "filename*=UTF-8''%D1%84" in h["content-disposition"]


def test_expiry_deletes_old_files(server_factory):
    srv = start(server_factory, "expire_days: 2")
    users(srv, "alice")
    c, _ = online(srv, "alice")
    put1, get1 = slot_urls(request_slot(c, "old.txt", 3, "text/plain"))
    put2, get2 = slot_urls(request_slot(c, "new.txt", 3, "text/plain", rid="s2"))
    put3, _ = slot_urls(request_slot(c, "never.txt", 3, "text/plain", rid="s3"))
    assert http(srv, "PUT", put1, b"old", "Content-Type: text/plain\r\n")[0] == 201
    assert http(srv, "PUT", put2, b"new", "Content-Type: text/plain\r\n")[0] == 201
    # Nothing is old yet.
    r = srv.ctl_run("upload_expire", "localhost")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stdout + r.stderr
    # Make old.txt three days old and the unfilled slot two days old.
    id1 = get1.split("/")[-2]
    id3 = put3.split("/")[-2]
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    now = int(time.time())
    db.execute("UPDATE upload_slot SET created_at = ? WHERE id = ?", (now - 3 * 86400, id1))
    db.execute("UPDATE upload_slot SET created_at = ? WHERE id = ?", (now - 2 * 86400, id3))
    db.commit()
    db.close()
    r = srv.ctl_run("upload_expire", "localhost")
    assert r.returncode == 0 and r.stdout.strip() == "2", r.stdout + r.stderr
    assert http(srv, "GET", get1)[0] == 404
    assert http(srv, "GET", get2)[2] == b"new"
    assert not os.path.exists(os.path.join(srv.data_dir, "upload", id1))
    assert [os.path.basename(f) for f in stored_files(srv)] == ["new.txt"]
    r = srv.ctl_run("upload_expire", "nosuch.example")
    assert r.returncode != 0


def test_account_removal_deletes_files(server_factory):
    srv = start(server_factory)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    pa, ga = slot_urls(request_slot(a, "a.txt", 1, "text/plain"))
    pb, gb = slot_urls(request_slot(b, "b.txt", 1, "text/plain"))
    assert http(srv, "PUT", pa, b"a", "Content-Type: text/plain\r\n")[0] == 201
    assert http(srv, "PUT", pb, b"b", "Content-Type: text/plain\r\n")[0] == 201
    r = srv.ctl_run("unregister", "alice", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    assert http(srv, "GET", ga)[0] == 404
    assert http(srv, "GET", gb)[2] == b"b"
    assert [os.path.basename(f) for f in stored_files(srv)] == ["b.txt"]
    # In-band removal (XEP-0077) as well.
    ans = iq(b, "rm", "<query xmlns='jabber:iq:register'><remove/></query>")
    assert "type='result'" in ans
    deadline = time.time() + 10
    while stored_files(srv) and time.time() < deadline:
        time.sleep(0.05)
    assert stored_files(srv) == []
    assert http(srv, "GET", gb)[0] == 404


def test_aborted_put_leaves_nothing_and_slot_can_be_retried(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = os.urandom(1 << 20)
    put, get = slot_urls(request_slot(c, "a.bin", len(data)))
    u = urllib.parse.urlsplit(put)
    s = connect(srv.http_port)
    s.sendall((f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data[:300000])
    s.close()
    # The partial file goes when the server notices; the retry then succeeds.
    deadline = time.time() + 10
    while True:
        st = http(srv, "PUT", put, data)[0]
        if st != 409 or time.time() > deadline:
            break
        time.sleep(0.05)
    assert st == 201
    assert http(srv, "GET", get)[2] == data
    assert [os.path.basename(f) for f in stored_files(srv)] == ["a.bin"]


def test_slixmpp_upload_then_raw_get(server_factory, tmp_path):
    slixmpp = pytest.importorskip("slixmpp")
    srv = start(server_factory)
    users(srv, "alice")
    path = tmp_path / "hello.txt"
    content = b"hello over XEP-0363\n" * 1000
    path.write_bytes(content)
    out = {}

    def make():
        x = slixmpp.ClientXMPP("alice@localhost", "pw")
        x.register_plugin("xep_0030")
        x.register_plugin("xep_0363")
        x["feature_mechanisms"].unencrypted_plain = True
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        x.ssl_context = ctx

        # Debian's slixmpp passes bare coroutines to asyncio.wait in
        # get_info_from_domain, which Python 3.11 refuses: the same walk
        # (the domain's info, then each item's) with tasks, so the
        # plugin's own discovery (find_upload_service: identity store/file,
        # the feature, the max-file-size form) runs unchanged.
        disco = x["xep_0030"]

        async def info_from_domain(domain=None, timeout=None, cached=True, callback=None):
            items = (await disco.get_items(domain, timeout=timeout))["disco_items"]["items"]
            jids = [domain] + [it[0] for it in items]
            return await asyncio.gather(*(disco.get_info(j, timeout=timeout) for j in jids))
        disco.get_info_from_domain = info_from_domain

        async def session_start(_):
            try:
                out["url"] = await x["xep_0363"].upload_file(path, domain="localhost",
                                                             timeout=10)
            except Exception as e:  # reported below
                out["error"] = repr(e)
            x.disconnect()
        x.add_event_handler("session_start", session_start)
        return x

    run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=30)
    assert "url" in out, out
    st, h, body = http(srv, "GET", out["url"])
    assert st == 200 and body == content
    assert h["content-type"] == "text/plain"


def test_retraction_deletes_the_shared_file(server_factory):
    srv = start(server_factory)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    put, get = slot_urls(request_slot(a, "pic.png", 3, "image/png"))
    assert http(srv, "PUT", put, b"png", "Content-Type: image/png\r\n")[0] == 201
    put2, get2 = slot_urls(request_slot(a, "other.png", 3, "image/png", rid="s2"))
    assert http(srv, "PUT", put2, b"oth", "Content-Type: image/png\r\n")[0] == 201
    # alice shares both: pic.png in the body of o1, other.png as the OOB URL of o2.
    a.send(f"<message to='bob@localhost' type='chat' id='m1'><body>{get}</body>"
           "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>")
    a.send(f"<message to='bob@localhost' type='chat' id='o2'><body>look</body>"
           f"<x xmlns='jabber:x:oob'><url>{get2}</url></x></message>")
    # bob passes alice's URL on and retracts his message: not his file.
    b.send(f"<message to='alice@localhost' type='chat' id='b1'><body>{get}</body>"
           "<origin-id xmlns='urn:xmpp:sid:0' id='ob1'/></message>")
    b.send("<message to='alice@localhost' type='chat' id='b2'>"
           "<retract id='ob1' xmlns='urn:xmpp:message-retract:1'/></message>")
    b.roundtrip()
    # A retraction of another message of alice's leaves her files alone.
    a.send("<message to='bob@localhost' type='chat' id='r0'>"
           "<retract id='nosuch' xmlns='urn:xmpp:message-retract:1'/></message>")
    a.roundtrip()
    assert http(srv, "GET", get)[2] == b"png"
    assert http(srv, "GET", get2)[2] == b"oth"
    # Retracting o1 (XEP-0424 :1) deletes pic.png; o2 by the fastening of :0.
    a.send("<message to='bob@localhost' type='chat' id='r1'>"
           "<retract id='o1' xmlns='urn:xmpp:message-retract:1'/></message>")
    a.roundtrip()
    assert http(srv, "GET", get)[0] == 404
    assert http(srv, "GET", get2)[2] == b"oth"
    a.send("<message to='bob@localhost' type='chat' id='r2'>"
           "<apply-to id='o2' xmlns='urn:xmpp:fasten:0'>"
           "<retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>")
    a.roundtrip()
    assert http(srv, "GET", get2)[0] == 404
    assert stored_files(srv) == []


def test_sweep_runs_on_its_own(server_factory):
    srv = start(server_factory, "expire_days: 1\nsweep_interval: 1s")
    users(srv, "alice")
    c, _ = online(srv, "alice")
    put, get = slot_urls(request_slot(c, "old.txt", 3, "text/plain"))
    assert http(srv, "PUT", put, b"old", "Content-Type: text/plain\r\n")[0] == 201
    db = sqlite3.connect(os.path.join(srv.data_dir, "xmppd.db"))
    db.execute("UPDATE upload_slot SET created_at = created_at - 2 * 86400")
    db.commit()
    db.close()
    deadline = time.time() + 15
    while http(srv, "GET", get)[0] != 404:
        assert time.time() < deadline, "the sweep did not run"
        time.sleep(0.1)
    assert stored_files(srv) == []


def test_long_names_are_cut_keeping_the_extension(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    _, get = slot_urls(request_slot(c, "a" * 300 + ".jpeg", 1, "image/jpeg"))
    name = urllib.parse.unquote(get.rsplit("/", 1)[1])
    assert name == "a" * 123 + ".jpeg" and len(name) == 128
    # Multi-byte characters are never cut in half.
    # (123 bytes are left before ".jpeg": the 62nd "я" would be cut.)
    _, get = slot_urls(request_slot(c, "я" * 100 + ".jpeg", 1, "image/jpeg", rid="s2"))
    name = urllib.parse.unquote(get.rsplit("/", 1)[1], errors="strict")
    assert name == "я" * 61 + ".jpeg", name


def test_one_message_shares_at_most_eight_files(server_factory):
    srv = start(server_factory)
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    gets = []
    for i in range(9):
        put, get = slot_urls(request_slot(a, f"f{i}.txt", 1, "text/plain", rid=f"s{i}"))
        assert http(srv, "PUT", put, b"x", "Content-Type: text/plain\r\n")[0] == 201
        gets.append(get)
    a.send(f"<message to='bob@localhost' type='chat' id='m9'><body>{' '.join(gets)}</body>"
           "</message>")
    a.send("<message to='bob@localhost' type='chat' id='r9'>"
           "<retract id='m9' xmlns='urn:xmpp:message-retract:1'/></message>")
    a.roundtrip()
    assert [http(srv, "GET", g)[0] for g in gets] == [404] * 8 + [200]


def test_two_hosts_and_a_restart(server_factory):
    srv = start(server_factory, hosts=("localhost", "second.test"))
    users(srv, "alice")
    users(srv, "carol", host="second.test")
    a, _ = online(srv, "alice")
    c, _ = online(srv, "carol", domain="second.test")
    pa, ga = slot_urls(request_slot(a, "a.txt", 1, "text/plain"))
    ans = iq(c, "c1", f"<request xmlns='{NS}' filename='c.txt' size='1' content-type='text/plain'/>",
             typ="get", to="upload.second.test")
    pc, gc = slot_urls(ans)
    assert gc.startswith(f"http://second.test:{srv.http_port}/upload/second.test/")
    # Each host's service is for its own accounts.
    ans = iq(a, "a2", f"<request xmlns='{NS}' filename='x' size='1'/>", typ="get",
             to="upload.second.test")
    assert "<forbidden" in ans
    # A token of one host does not open a slot of the other.
    forged = pc.replace("/upload/second.test/", "/upload/localhost/")
    assert http(srv, "PUT", forged, b"c", "Content-Type: text/plain\r\n")[0] == 403
    assert http(srv, "PUT", pa, b"a", "Content-Type: text/plain\r\n")[0] == 201
    # The secret survives a restart: a slot asked for before it is filled after it.
    a.close()
    c.close()
    srv.stop()
    srv.restart()
    assert http(srv, "PUT", pc, b"c", "Content-Type: text/plain\r\n")[0] == 201
    assert http(srv, "GET", ga)[2] == b"a"
    assert http(srv, "GET", gc)[2] == b"c"


def test_client_leaving_a_get_midway(server_factory):
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = os.urandom(4 << 20)
    put, get = slot_urls(request_slot(c, "big.bin", len(data)))
    assert http(srv, "PUT", put, data)[0] == 201
    u = urllib.parse.urlsplit(get)
    for _ in range(3):
        s = connect(srv.http_port)
        s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        s.close()
    # The server goes on serving (and frees what the left transfers held:
    # the sanitizer checks at the end).
    assert http(srv, "GET", get)[2] == data


def test_put_with_expect_100_continue(server_factory):
    """A client that sends Expect: 100-continue gets 100 Continue once the
    slot is checked, and a refusal instead, without sending the body."""
    from test_http import closed_by_server, read_head
    srv = start(server_factory)
    users(srv, "alice")
    c, _ = online(srv, "alice")
    data = b"e" * 3000
    put, get = slot_urls(request_slot(c, "e.txt", len(data), "text/plain"))
    u = urllib.parse.urlsplit(put)
    head = (f"PUT {u.path}?{u.query} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(data)}\r\nExpect: 100-continue\r\n\r\n").encode()
    # A wrong token: 403 at once, and the connection closes (the body never went).
    bad = head.replace(b"token=", b"token=1")
    s = connect(srv.http_port, 5)
    s.sendall(bad)
    out = closed_by_server(s, timeout=5)
    assert out.startswith(b"HTTP/1.1 403 ") and b" 100 " not in out, out
    # The right one: 100 Continue, then the body, then 201.
    s = connect(srv.http_port, 5)
    s.sendall(head)
    assert read_head(s) == b"HTTP/1.1 100 Continue"
    s.sendall(data)
    assert read_response(s)[0] == 201
    s.close()
    assert http(srv, "GET", get)[2] == data
    # The slot is filled: 409 instead of the 100.
    s = connect(srv.http_port, 5)
    s.sendall(head)
    assert closed_by_server(s, timeout=5).startswith(b"HTTP/1.1 409 ")
