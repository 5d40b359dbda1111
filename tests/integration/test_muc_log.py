"""mod_muc_log (public room logs, as ejabberd's mod_muc_log) through the
wire: rooms whose configuration enables logging (muc#roomconfig_enablelogging)
get a file per day with the joins, leaves, nick changes, subject changes,
kicks, bans and messages, an index per room and an index of the rooms;
everything user-supplied is escaped; a room with logging off writes
nothing; the queue's bound drops and counts; a headless Chromium reads a
day page.

Barriers: a room runs the MUC_ROOM_EVENT hook (mod_muc_log queues the
event) before the occupants hear of what happened, so once a client got
the room's stanza (its echo, its self-presence, an IQ result) the event is
queued, and `xmppctl muc_log_flush localhost` returns when everything
queued is in its file."""
import datetime
import os
import re

import pytest

from helpers import expect, iq, online, slix_client, users
from test_muc import MUC, NS_MUC, admin, config, create, groupchat, join

NS_USER = NS_MUC + "#user"


def start(server_factory, log_opts="timezone: universal", extra=""):
    srv = server_factory(extra_yaml=("modules:\n  mod_muc: {}\n"
                                     f"  mod_muc_log: {{{log_opts}}}\n{extra}"))
    users(srv, "alice", "bob", "carol")
    return srv


def outdir(srv):
    return os.path.join(srv.data_dir, "muc_log")


def flush(srv):
    r = srv.ctl_run("muc_log_flush", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    return dict(line.split(" ", 1) for line in r.stdout.split("\n") if " " in line)


def today():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")


def day_file(srv, room, day, ext=".html", plain=False):
    d = os.path.join(outdir(srv), f"{room}@{MUC}")
    if plain:
        return os.path.join(d, f"{day}{ext}")
    return os.path.join(d, day[:4], day[5:7], f"{day[8:]}{ext}")


def read_day(srv, room, **kw):
    """The room's day file (of today, UTC; of yesterday around midnight)."""
    for day in {today(), (datetime.datetime.now(datetime.timezone.utc)
                          - datetime.timedelta(minutes=5)).strftime("%Y-%m-%d")}:
        p = day_file(srv, room, day, **kw)
        if os.path.exists(p):
            return p, open(p, encoding="utf-8").read()
    raise AssertionError(f"no day file for {room} under {outdir(srv)}: "
                         f"{list(os.walk(outdir(srv)))}")


def logged_room(c, room, nick, title=None):
    """Creates room as nick with logging on."""
    create(c, room, nick)
    fields = {"enablelogging": "1"}
    if title:
        fields["roomname"] = title
    r = config(c, room, fields)
    assert "type='result'" in r, r


def say(c, room, body, mid):
    """A groupchat message, read back (its echo: the event is queued)."""
    groupchat(c, room, body, mid)
    expect(c, rf"<message[^>]*id='{mid}'.*?</message>")


# ---- the form field ------------------------------------------------------------------------------

def test_enablelogging_in_config_form(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    create(a, "form", "al")
    r = iq(a, "f1", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"form@{MUC}")
    assert re.search(r"var='muc#roomconfig_enablelogging'[^>]*>\s*<value>0</value>", r), r
    config(a, "form", {"enablelogging": "1"})
    r = iq(a, "f2", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"form@{MUC}")
    assert re.search(r"var='muc#roomconfig_enablelogging'[^>]*>\s*<value>1</value>", r), r


def test_access_log_decides_who_switches_logging(server_factory):
    """access_log (ejabberd's): alice is allowed, bob owns a room too but is
    not: his form has no enablelogging field, and his form that turns it on
    is refused with forbidden and changes nothing (the room logs nothing);
    one that leaves it as it is, and the rest of his configuration, go
    through.  alice can turn logging on in bob's room (as its admin here),
    and then bob cannot turn it off."""
    srv = start(server_factory, "timezone: universal, access_log: loggers",
                extra="acl:\n  logger_acl:\n    user: [alice]\n"
                      "access_rules:\n  loggers:\n    - allow: logger_acl\n")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    field = r"var='muc#roomconfig_enablelogging'"
    logged_room(a, "allowed", "al")
    r = iq(a, "f1", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"allowed@{MUC}")
    assert re.search(field + r"[^>]*>\s*<value>1</value>", r), r
    create(b, "denied", "bo")
    r = iq(b, "f2", f"<query xmlns='{NS_MUC}#owner'/>", typ="get", to=f"denied@{MUC}")
    assert "muc#roomconfig_roomname" in r and not re.search(field, r), r
    r = config(b, "denied", {"enablelogging": "1", "roomname": "Not Logged"}, "c1")
    assert "type='error'" in r and "<forbidden " in r, r
    r = config(b, "denied", {"enablelogging": "0", "roomname": "Named"}, "c2")
    assert "type='result'" in r, r
    say(b, "denied", "still off the record", "d1")
    # bob makes alice an owner of his room; she turns logging on, he cannot
    # turn it off.
    r = admin(b, "<item jid='alice@localhost' affiliation='owner'/>", "denied", "o1")
    assert "type='result'" in r, r
    join(a, "denied", "al")
    r = config(a, "denied", {"enablelogging": "1"}, "c3")
    assert "type='result'" in r, r
    r = config(b, "denied", {"enablelogging": "0"}, "c4")
    assert "type='error'" in r and "<forbidden " in r, r
    say(b, "denied", "now on the record", "d2")
    flush(srv)
    _, page = read_day(srv, "denied")
    assert "now on the record" in page and "off the record" not in page, page
    assert "<h1>Named</h1>" in page, page


# ---- what a day file holds -------------------------------------------------------------------------

def test_slixmpp_session_logged(server_factory):
    """slixmpp clients: alice creates a logged room, bob enters; they chat,
    bob changes his nick, alice the subject, bob leaves.  The day file has
    all of it in order, the room's index lists the day, the top index the
    room."""
    import asyncio

    from xmpptest import run_slixmpp

    srv = start(server_factory)
    room = f"lounge@{MUC}"
    done = {}

    def client(jid, script):
        def make():
            c = slix_client(srv, jid, "xep_0045", "xep_0004", "xep_0030")

            async def go(_):
                try:
                    await script(c, c.plugin["xep_0045"])
                    done[jid] = True
                finally:
                    c.disconnect()

            c.add_event_handler("session_start", lambda e: asyncio.ensure_future(go(e)))
            return c
        run_slixmpp(make, ("127.0.0.1", srv.c2s_port), timeout=30)

    def echo(c, body):
        fut = asyncio.get_event_loop().create_future()

        def on(msg):
            if msg["body"] == body and not fut.done():
                fut.set_result(msg)
        c.add_event_handler("groupchat_message", on)
        return fut

    async def roundtrip(c):
        # The room handled the client's earlier stanzas (the service holds
        # the stream meanwhile), so their events are queued.
        await c.plugin["xep_0030"].get_info(jid=MUC, timeout=10)

    async def alice(c, muc):
        await muc.join_muc_wait(room, "alice", timeout=10)
        form = await muc.get_room_config(room)
        form.set_values({"muc#roomconfig_roomname": "The Lounge",
                         "muc#roomconfig_enablelogging": True})
        await muc.set_room_config(room, form)
        got = echo(c, "hello from alice")
        c.send_message(mto=room, mbody="hello from alice", mtype="groupchat")
        await asyncio.wait_for(got, 10)

    async def bob(c, muc):
        await muc.join_muc_wait(room, "bob", timeout=10)
        got = echo(c, "hi, see https://example.org/a?b=1&c=2.")
        c.send_message(mto=room, mbody="hi, see https://example.org/a?b=1&c=2.",
                       mtype="groupchat")
        await asyncio.wait_for(got, 10)
        c.send_presence(pto=f"{room}/robert")  # a nick change
        await roundtrip(c)
        muc.set_subject(room, "Lounge talk")
        await roundtrip(c)
        got = echo(c, "/me waves")
        c.send_message(mto=room, mbody="/me waves", mtype="groupchat")
        await asyncio.wait_for(got, 10)
        c.send_presence(pto=f"{room}/robert", ptype="unavailable", pstatus="off to lunch")
        await roundtrip(c)

    # alice stays in the room (her own session) while bob comes and goes:
    # she runs in a thread of her own and leaves last.
    import threading
    a_ready = threading.Event()
    a_release = threading.Event()

    async def alice_stays(c, muc):
        await alice(c, muc)
        a_ready.set()
        await asyncio.get_event_loop().run_in_executor(None, a_release.wait, 30)
        muc.leave_muc(room, "alice")
        await roundtrip(c)

    ta = threading.Thread(target=client, args=("alice@localhost/sx", alice_stays))
    ta.start()
    try:
        assert a_ready.wait(30), "alice did not set the room up"
        client("bob@localhost/sx", bob)
    finally:
        a_release.set()
        ta.join(40)
    assert done == {"alice@localhost/sx": True, "bob@localhost/sx": True}, done

    stats = flush(srv)
    assert stats["dropped"] == "0" and stats["queued"] == "0", stats
    path, page = read_day(srv, "lounge")
    lines = [ln for ln in page.split("\n") if ln.startswith("<div class=\"ev")]
    text = [re.sub(r"<[^>]+>", "", ln) for ln in lines]
    ts = r"\[\d\d:\d\d:\d\d\] "
    expected = [
        r"The room's configuration was changed",
        r"&lt;alice&gt; hello from alice",
        r"bob joins the room",
        r"&lt;bob&gt; hi, see https://example.org/a\?b=1&amp;c=2\.",
        r"bob is now known as robert",
        r"robert has set the subject to: Lounge talk",
        r"\* robert waves",
        r"robert leaves the room \(status: off to lunch\)",
        r"alice leaves the room",
    ]
    assert len(text) == len(expected), "\n".join(text)
    for got, want in zip(text, expected):
        assert re.fullmatch(ts + want, got), (got, want)
    # alice's own join came before logging was on: not logged.
    assert "alice joins" not in page
    # The URL is a link (rel=nofollow, escaped in the attribute too); the
    # sentence's full stop is not part of it.
    assert ('<a href="https://example.org/a?b=1&amp;c=2" rel="nofollow">'
            'https://example.org/a?b=1&amp;c=2</a>.') in page, page
    assert "<title>The Lounge — " in page and "<style>" in page
    # The room's index lists the day; the top index the room.
    rindex = open(os.path.join(outdir(srv), f"lounge@{MUC}", "index.html")).read()
    rel = os.path.relpath(path, os.path.join(outdir(srv), f"lounge@{MUC}"))
    assert f'<a href="{rel}">{today()}</a>' in rindex or today() not in path, rindex
    assert "<h1>The Lounge</h1>" in rindex, rindex
    top = open(os.path.join(outdir(srv), "index.html")).read()
    assert f'<a href="lounge@{MUC}/index.html">lounge@{MUC}</a>' in top, top


def test_kick_ban_and_destroy_logged(server_factory):
    srv = start(server_factory, "timezone: universal, cssfile: \"../../../log.css\"")
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    c, _ = online(srv, "carol")
    logged_room(a, "court", "judge")
    join(b, "court", "bob")
    join(c, "court", "carol")
    r = admin(a, "<item nick='bob' role='none'><reason>be nice</reason></item>", "court", "k1")
    assert "type='result'" in r, r
    r = admin(a, f"<item jid='carol@localhost' affiliation='outcast'/>", "court", "b1")
    assert "type='result'" in r, r
    r = iq(a, "d1", f"<query xmlns='{NS_MUC}#owner'><destroy><reason>closing time</reason>"
                    f"</destroy></query>", to=f"court@{MUC}")
    assert "type='result'" in r, r
    flush(srv)
    _, page = read_day(srv, "court")
    assert re.search(r"bob</span> has been kicked by <span[^>]*>judge</span> "
                     r"\(reason: be nice\)", page), page
    assert re.search(r"carol</span> has been banned by <span[^>]*>judge</span>", page), page
    assert "The room was destroyed (reason: closing time)" in page, page
    # cssfile: a link instead of the embedded sheet.
    assert '<link rel="stylesheet" href="../../../log.css">' in page and "<style>" not in page


def test_logging_off_writes_nothing(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    create(a, "quiet", "al")
    say(a, "quiet", "not for the record", "q1")
    # Logging on, then off again: what came after is not written.
    logged_room(a, "onoff", "al")
    say(a, "onoff", "on the record", "o1")
    r = config(a, "onoff", {"enablelogging": "0"})
    assert "type='result'" in r, r
    say(a, "onoff", "off the record", "o2")
    # A logged room too, so that the flush below has written something.
    logged_room(a, "loud", "al")
    say(a, "loud", "for the record", "l1")
    stats = flush(srv)
    assert int(stats["written"]) >= 2, stats
    assert not os.path.exists(os.path.join(outdir(srv), f"quiet@{MUC}"))
    _, page = read_day(srv, "loud")
    assert "for the record" in page
    _, page = read_day(srv, "onoff")
    assert "on the record" in page and "off the record" not in page, page
    top = open(os.path.join(outdir(srv), "index.html")).read()
    assert "loud@" in top and "onoff@" in top and "quiet@" not in top, top


def test_persistent_room_keeps_logging_across_restart(server_factory):
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    create(a, "kept", "al")
    r = config(a, "kept", {"persistentroom": "1", "enablelogging": "1"})
    assert "type='result'" in r, r
    a.roundtrip()  # the room's stored state is written
    srv.stop()
    srv.restart()
    a, _ = online(srv, "alice")
    join(a, "kept", "al")
    say(a, "kept", "after the restart", "k1")
    flush(srv)
    _, page = read_day(srv, "kept")
    assert re.search(r"al</span> joins the room</div>\n.*after the restart", page), page


# ---- escaping ------------------------------------------------------------------------------------

XSS_NICK = "<img src=x onerror=\"window.pwned='nick'\">"
XSS_BODY = ("<script>window.pwned='body'</script> \"><b onmouseover=\"window.pwned=1\">x</b> "
            "javascript:alert(1) http://example.org/\"onmouseover=\"alert(1)")
XSS_TITLE = "<script>window.pwned='title'</script>\"'&"


def xml_attr(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


def xss_room(srv):
    """A logged room whose title, a nick, a message and the subject try to
    get markup into the page."""
    a, _ = online(srv, "alice")
    b, _ = online(srv, "bob")
    logged_room(a, "xss", "al", title=xml_attr(XSS_TITLE))
    a.send(f"<presence to='xss@{MUC}/{xml_attr(XSS_NICK)}'/>")
    expect(a, r"<presence[^>]*>.*?code='303'.*?</presence>")  # the nick change
    join(b, "xss", "bob")
    say(a, "xss", xml_attr(XSS_BODY), "x1")
    a.send(f"<message to='xss@{MUC}' type='groupchat' id='x2'><subject>"
           f"{xml_attr(XSS_TITLE)}</subject></message>")
    expect(a, r"<message[^>]*id='x2'.*?</message>")
    say(b, "xss", "plain words from bob", "x3")
    flush(srv)
    return read_day(srv, "xss")


def test_user_text_escaped(server_factory):
    srv = start(server_factory)
    _, page = xss_room(srv)
    body = page.split("<body>", 1)[1]
    # No markup of theirs: every < of the page is one of ours.
    assert "<script" not in body and "<img" not in body and "<b " not in body, body
    assert "&lt;script&gt;window.pwned=&#39;body&#39;&lt;/script&gt;" in body, body
    assert "&lt;img src=x onerror=&quot;window.pwned=&#39;nick&#39;&quot;&gt;" in body, body
    # javascript: is no link; the http URL stops before the quote.
    assert 'href="javascript' not in body
    assert '<a href="http://example.org/" rel="nofollow">http://example.org/</a>' in body, body
    assert not re.search(r"<(?!/?(div|span|a|br|header|nav|h1|h2|p|main)\b)", body), body
    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title.startswith("&lt;script&gt;window.pwned=&#39;title&#39;&lt;/script&gt;"
                            "&quot;&#39;&amp;"), title
    rindex = open(os.path.join(outdir(srv), f"xss@{MUC}", "index.html")).read()
    assert "<script" not in rindex.split("<body>", 1)[1], rindex


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.mark.slow  # Chromium's start
def test_chromium_reads_the_log(server_factory, tmp_path):
    """What a reader sees in a browser: the message text, the would-be
    markup as text (none of it ran), the nicks and the times."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are missing: run scripts/deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    srv = start(server_factory)
    path, _ = xss_room(srv)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'p'}"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get("file://" + path)
        text = driver.find_element(By.TAG_NAME, "body").text
        # Nothing of theirs ran.
        assert driver.execute_script("return window.pwned === undefined"), text
        assert driver.execute_script("return document.scripts.length") == 0
        assert driver.execute_script("return document.images.length") == 0
        # What they wrote is there to read, as text.
        assert "<script>window.pwned='body'</script>" in text, text
        assert XSS_NICK in text, text
        assert re.search(r"\[\d\d:\d\d:\d\d\] <bob> plain words from bob", text), text
        assert f"<{XSS_NICK}> <script>" in text, text
        assert re.search(r"\[\d\d:\d\d:\d\d\] bob joins the room", text), text
        assert f"has set the subject to: {XSS_TITLE}" in text, text
        # The page's title and heading are the room's title, as text.
        assert driver.title.startswith(XSS_TITLE), driver.title
        assert driver.find_element(By.TAG_NAME, "h1").text == XSS_TITLE
        # The URL is a link that goes nowhere but where it says.
        links = driver.find_elements(By.CSS_SELECTOR, "main a[rel=nofollow]")
        assert [ln.get_attribute("href") for ln in links] == ["http://example.org/"]
        # Laid out: the embedded sheet applies (the times in a column).
        ts = driver.find_element(By.CSS_SELECTOR, ".ts")
        assert ts.value_of_css_property("display") == "inline-block"
        assert ts.is_displayed() and re.fullmatch(r"\[\d\d:\d\d:\d\d\]", ts.text)
        # The room's index leads to the day.
        driver.get("file://" + os.path.join(outdir(srv), f"xss@{MUC}", "index.html"))
        driver.find_element(By.PARTIAL_LINK_TEXT, today()[:4]).click()
        assert "plain words from bob" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


# ---- options --------------------------------------------------------------------------------------

def test_plaintext_and_plain_dirs(server_factory):
    srv = start(server_factory, "timezone: universal, file_format: plaintext, dirtype: plain")
    a, _ = online(srv, "alice")
    logged_room(a, "txt", "al", title="Text room")
    say(a, "txt", "two\nlines &amp; &lt;tags&gt;", "t1")
    flush(srv)
    path, page = read_day(srv, "txt", ext=".txt", plain=True)
    assert page.startswith(f"Room: txt@{MUC}\nTitle: Text room\nDate: "), page
    assert re.search(r"\n\[\d\d:\d\d:\d\d\] <al> two\n {11}lines & <tags>\n", page), page
    rindex = open(os.path.join(outdir(srv), f"txt@{MUC}", "index.html")).read()
    assert f'<a href="{os.path.basename(path)}">' in rindex, rindex


def test_timezone_local(server_factory):
    srv = start(server_factory, "timezone: local")
    a, _ = online(srv, "alice")
    logged_room(a, "tz", "al")
    say(a, "tz", "what time is it", "z1")
    flush(srv)
    _, page = read_day(srv, "tz")  # the test's TZ is the server's: UTC unless set
    assert "what time is it" in page


def test_outdir_option(server_factory, tmp_path):
    out = tmp_path / "logs-@HOST@"
    srv = start(server_factory, f"outdir: \"{out}\"")
    a, _ = online(srv, "alice")
    logged_room(a, "od", "al")
    say(a, "od", "elsewhere", "d1")
    flush(srv)
    assert os.path.isdir(tmp_path / "logs-localhost" / f"od@{MUC}")
    assert not os.path.exists(outdir(srv))


# ---- the queue ------------------------------------------------------------------------------------

def test_queue_bound_drops_and_counts(server_factory):
    srv = start(server_factory, "timezone: universal, queue_size: 3")
    a, _ = online(srv, "alice")
    logged_room(a, "busy", "al")
    flush(srv)
    r = srv.ctl_run("muc_log_pause", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    # A flush while paused is refused rather than hanging.
    r = srv.ctl_run("muc_log_flush", "localhost")
    assert r.returncode != 0 and "paused" in (r.stdout + r.stderr), r
    for i in range(5):
        say(a, "busy", f"message {i}", f"m{i}")
    r = srv.ctl_run("muc_log_stats", "localhost")
    assert "queued 3" in r.stdout and "dropped 2" in r.stdout and "paused yes" in r.stdout, r
    r = srv.ctl_run("muc_log_resume", "localhost")
    assert r.returncode == 0, r.stdout + r.stderr
    stats = flush(srv)
    assert stats["queued"] == "0" and stats["dropped"] == "2", stats
    _, page = read_day(srv, "busy")
    assert all(f"message {i}" in page for i in range(3)), page
    assert "message 3" not in page and "message 4" not in page, page
    log = srv.log_text()
    assert re.search(r"event=\"muc log queue full\" host=localhost room=busy@\S+ "
                     r"queue_size=3", log), log[-3000:]
    assert log.count("muc log queue full") == 1  # once per burst
    assert re.search(r"event=\"muc log events dropped\" host=localhost dropped=2", log)
    # Room for events again after the drain.
    say(a, "busy", "after the burst", "m9")
    flush(srv)
    assert "after the burst" in read_day(srv, "busy")[1]


def test_write_failure_logged_and_counted(server_factory):
    """A room directory that cannot be made (a file is in the way): the
    failure is logged with the path and counted, other rooms go on."""
    srv = start(server_factory)
    os.makedirs(outdir(srv), exist_ok=True)
    with open(os.path.join(outdir(srv), f"blocked@{MUC}"), "w") as f:
        f.write("in the way")
    a, _ = online(srv, "alice")
    logged_room(a, "blocked", "al")
    say(a, "blocked", "nowhere to go", "w1")
    stats = flush(srv)
    assert stats["write_errors"] != "0", stats
    assert re.search(rf'event="muc log write failed" host=localhost path=\S*blocked@{MUC}\S* '
                     r'error="', srv.log_text()), srv.log_text()[-2000:]
    logged_room(a, "open", "al")
    say(a, "open", "somewhere to go", "w2")
    flush(srv)
    assert "somewhere to go" in read_day(srv, "open")[1]


def test_ctl_on_host_without_module(server_factory):
    srv = server_factory(extra_yaml="modules:\n  mod_muc: {}\n")
    r = srv.ctl_run("muc_log_flush", "localhost")
    assert r.returncode != 0
    srv2 = start(server_factory)
    r = srv2.ctl_run("muc_log_stats", "nosuch.example")
    assert r.returncode != 0


# ---- anchors -------------------------------------------------------------------------------------

def test_anchors_unique_within_a_millisecond(server_factory):
    """Messages sent back to back (one write: the room handles them in the
    same turn of its loop, many within one millisecond) each get an anchor
    of their own: the ids of a day page are unique, and every line links to
    its own id."""
    srv = start(server_factory)
    a, _ = online(srv, "alice")
    logged_room(a, "fast", "al")
    n = 40
    a.send("".join(f"<message to='fast@{MUC}' type='groupchat' id='f{i}'>"
                   f"<body>burst {i}</body></message>" for i in range(n)))
    expect(a, rf"<message[^>]*id='f{n - 1}'.*?</message>")
    flush(srv)
    _, page = read_day(srv, "fast")
    lines = [ln for ln in page.split("\n") if ln.startswith("<div class=\"ev")]
    ids = [re.search(r' id="([^"]+)"><a class="ts" href="#([^"]+)"', ln).groups()
           for ln in lines]
    assert all(i == h for i, h in ids), ids
    assert sum("burst " in ln for ln in lines) == n, page
    seen = [i for i, _ in ids]
    dups = sorted({i for i in seen if seen.count(i) > 1})
    assert not dups, f"shared anchors {dups} in {len(seen)} lines"
