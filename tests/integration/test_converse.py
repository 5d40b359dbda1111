"""Converse.js (the npm package, installed by scripts/web-deps) in Debian's
headless Chromium logs in to xmppd over WebSocket, and in a second test
over BOSH, and exchanges messages with a slixmpp account on the TCP
listener.

The page and Converse's dist files are served from loopback by a small
Python server of the test; Chromium is driven through chromium-driver
(python3-selenium).  Nothing is fetched at test time: without the browser
or the package the test is skipped and names the script to run."""
import functools
import http.server
import os
import shutil
import ssl
import threading
import time

import pytest
import slixmpp

from helpers import users
from test_c2s import cert_path
from test_http import web
from xmpptest import run_slixmpp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST = os.path.join(ROOT, "tests", "web", "node_modules", "converse.js", "dist")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="/dist/converse.min.css">
<script type="module" src="/dist/converse.min.js"></script>
</head><body>
<script type="module">
window.xd = {connected: false, msgs: [], errors: []};
converse.plugins.add('xmppd-test', {
  initialize() {
    const api = this._converse.api;
    window.xd.api = api;
    api.listen.on('connected', () => {
      // every <message/> the client receives, as Strophe hands it over
      api.connection.get().addHandler((st) => {
        const b = st.querySelector('body');
        if (b) window.xd.msgs.push(b.textContent);
        return true;
      }, null, 'message');
      window.xd.connected = true;
    });
  }
});
converse.initialize({
  %(transport)s,
  discover_connection_methods: false,
  jid: '%(user)s@localhost/%(resource)s',
  password: 'pw',
  auto_login: true,
  view_mode: 'fullscreen',
  persistent_store: 'sessionStorage',
  whitelisted_plugins: ['xmppd-test'],
  muc_history_max_stanzas: 20,
  loglevel: 'info',
}).catch((e) => window.xd.errors.push(String(e)));
</script></body></html>
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _serve(directory):
    handler = functools.partial(_Quiet, directory=directory)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    return httpd


def _wait(driver, script, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = driver.execute_script(script)
        if v:
            return v
        time.sleep(0.1)
    errs = driver.execute_script("return window.xd && window.xd.errors")
    logs = []
    try:
        logs = [e["message"] for e in driver.get_log("browser")][-20:]
    except Exception:
        pass
    raise AssertionError(f"timed out waiting for {script!r}; errors={errs} console={logs}")


def _converse_login_and_exchange(server_factory, tmp_path, transport, resource):
    """Converse.js logs alice in (transport: its connection option) and
    exchanges a message with bob, a slixmpp client on the TCP listener."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are missing: run scripts/deps")
    if not os.path.exists(os.path.join(DIST, "converse.min.js")):
        pytest.skip("Converse.js is missing: run scripts/web-deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    srv = web(server_factory, module=False)
    users(srv, "alice", "bob")

    site = tmp_path / "site"
    site.mkdir()
    os.symlink(DIST, site / "dist")
    (site / "index.html").write_text(PAGE % {
        "transport": transport % {"port": srv.http_port}, "resource": resource, "user": "alice"})
    httpd = _serve(str(site))

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    bob_got = []
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        _wait(driver, "return window.xd && window.xd.connected")
        # The browser's session is an ordinary c2s session of the server.
        assert f"jid=alice@localhost/{resource}" in srv.log_text()

        ready = threading.Event()

        class Bob(slixmpp.ClientXMPP):
            def __init__(self):
                super().__init__("bob@localhost/tcp", "pw")
                self.ssl_context = ssl.create_default_context(cafile=cert_path(srv))
                self.add_event_handler("session_start", self.start)
                self.add_event_handler("message", self.on_message)

            async def start(self, _):
                self.send_presence()
                self.send_message(mto=f"alice@localhost/{resource}", mbody="hello converse",
                                  mtype="chat")
                ready.set()

            def on_message(self, msg):
                if msg["body"]:
                    bob_got.append(str(msg["body"]))
                    self.disconnect()

        t = threading.Thread(target=lambda: run_slixmpp(lambda: Bob(),
                                                        ("127.0.0.1", srv.c2s_port), timeout=30))
        t.start()
        _wait(driver, "return window.xd.msgs.includes('hello converse')")
        assert ready.wait(5)
        driver.execute_script("""
            const {$msg} = converse.env;
            window.xd.api.send($msg({to: 'bob@localhost/tcp', type: 'chat', id: 'cv1'})
                               .c('body').t('hello slixmpp'));
        """)
        t.join(30)
        assert bob_got == ["hello slixmpp"]
    finally:
        driver.quit()
        httpd.shutdown()


@pytest.mark.slow  # about 30 s, most of it Chromium's start
def test_converse_over_websocket(server_factory, tmp_path):
    _converse_login_and_exchange(server_factory, tmp_path,
                                 "websocket_url: 'ws://127.0.0.1:%(port)d/ws'", "converse")


@pytest.mark.slow  # about 30 s, most of it Chromium's start
def test_converse_over_bosh(server_factory, tmp_path):
    """The same over BOSH (XEP-0124/0206): Strophe's long polling with
    hold 1, restart after SASL, requests on keep-alive connections."""
    _converse_login_and_exchange(server_factory, tmp_path,
                                 "bosh_service_url: 'http://127.0.0.1:%(port)d/bosh'",
                                 "converse-bosh")


@pytest.mark.slow  # about 30 s, most of it Chromium's start
def test_converse_group_chat(server_factory, tmp_path):
    """Converse.js as a group chat client (the MUC issue's "Converse.js's
    expectations hold"): it enters a room alice (raw XML on TCP) made, with
    her subject, the history and the occupant list as Converse models them;
    its groupchat message reaches alice; and it creates and configures a
    room of its own through the owner form (auto_configure)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are missing: run scripts/deps")
    if not os.path.exists(os.path.join(DIST, "converse.min.js")):
        pytest.skip("Converse.js is missing: run scripts/web-deps")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from helpers import expect, iq, online
    from test_muc import MUC, config, create, groupchat

    srv = web(server_factory, module=False, extra_yaml="modules:\n  mod_muc: {}\n")
    users(srv, "alice", "bob")
    a, _ = online(srv, "alice")
    create(a, "lounge", "al")
    config(a, "lounge", {"persistentroom": "1", "roomname": "Lounge"})
    a.send(f"<message to='lounge@{MUC}' type='groupchat' id='s1'><subject>Welcome</subject>"
           f"</message>")
    expect(a, r"id='s1'")
    groupchat(a, "lounge", "first words", "h1")
    groupchat(a, "lounge", "second words", "h2")
    expect(a, r"id='h2'")

    site = tmp_path / "site"
    site.mkdir()
    os.symlink(DIST, site / "dist")
    (site / "index.html").write_text(PAGE % {
        "transport": f"websocket_url: 'ws://127.0.0.1:{srv.http_port}/ws'",
        "resource": "conv", "user": "bob"})
    httpd = _serve(str(site))
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"http://127.0.0.1:{httpd.server_address[1]}/index.html")
        _wait(driver, "return window.xd && window.xd.connected")
        driver.execute_script(f"""
            window.xd.api.rooms.open('lounge@{MUC}', {{nick: 'conv'}})
                .then((r) => window.xd.room = r)
                .catch((e) => window.xd.errors.push(String(e)));
        """)
        _wait(driver, "return window.xd.room && window.xd.room.isEntered()")
        _wait(driver, "const s = window.xd.room.get('subject'); return s && s.text === 'Welcome'")
        _wait(driver, "const b = window.xd.room.messages.pluck('body');"
                      " return b.includes('first words') && b.includes('second words')")
        _wait(driver, "return window.xd.room.occupants.pluck('nick').includes('al')")
        assert driver.execute_script("return window.xd.room.features.get('persistent')")
        assert driver.execute_script("return window.xd.room.get('name')") in ("Lounge", None)
        # alice sees Converse enter, and gets its message
        expect(a, rf"<presence[^>]*from='lounge@{MUC}/conv'")
        driver.execute_script("window.xd.room.sendMessage({body: 'from converse'})")
        m = expect(a, rf"<message[^>]*from='lounge@{MUC}/conv'[^>]*>.*?from converse.*?</message>")
        assert "type='groupchat'" in m, m
        # a room Converse creates and configures itself
        driver.execute_script(f"""
            window.xd.api.rooms.open('made@{MUC}', {{nick: 'conv', auto_configure: true,
                roomconfig: {{persistentroom: true, roomdesc: 'made by converse',
                              whois: 'anyone'}}}})
                .then((r) => window.xd.made = r)
                .catch((e) => window.xd.errors.push(String(e)));
        """)
        _wait(driver, "return window.xd.made && window.xd.made.isEntered()")
        deadline = time.time() + 20
        while True:
            r = iq(a, f"d{int(time.time() * 1000)}",
                   "<query xmlns='http://jabber.org/protocol/disco#info'/>", typ="get",
                   to=f"made@{MUC}")
            if "muc_persistent" in r and "made by converse" in r:
                break
            assert time.time() < deadline, r
            time.sleep(0.2)
        assert "muc_nonanonymous" in r, r
    finally:
        driver.quit()
        httpd.shutdown()
