"""A browser client shows it (issue 6): Converse.js, served from this
machine, logged in to a real Prosody over websocket in headless Chromium.
Bob adds alice@unified.localhost through Converse's own "Add a contact"
form and his roster follows her devices; nothing his browser receives
names one. The screenshots are kept; their paths are printed."""
import asyncio
import functools
import http.server
import os
import threading

from harness import DOMAIN, JINGLE_AUDIO, ROOT, Client, Component, presence, start_prosody

ALICE = f"alice@{DOMAIN}"
BROWSER = os.path.join(ROOT, "tests", "browser")
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


def serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=directory)
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def shot(answer, capsys):
    """Prints a screenshot's path past pytest's capture, so that
    scripts/test shows where to look."""
    assert answer.startswith("shot ") and os.path.getsize(answer[5:]) > 0, answer
    with capsys.disabled():
        print(f"\nscreenshot: {answer[5:]}", flush=True)


class Browser:
    """tests/browser/roster.mjs: one command per line in, one answer out."""

    def __init__(self, proc):
        self.proc = proc

    async def line(self, timeout=60):
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        text = raw.decode().strip()
        assert text, "the browser driver exited: " + (await self.proc.stderr.read()).decode()[-2000:]
        return text

    async def ask(self, command):
        self.proc.stdin.write((command + "\n").encode())
        await self.proc.stdin.drain()
        return await self.line()

    async def expect(self, status):
        answer = await self.ask(f"expect {status}")
        assert answer.startswith(f"saw {status}"), f"Bob's roster does not show Alice {status}: {answer}"


def test_converse_in_chromium_shows_alice_as_her_devices_change(tmp_path, capsys):
    assert os.path.isdir(os.path.join(BROWSER, "node_modules", "converse.js")), \
        "run scripts/install-deps (npm ci in tests/browser)"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    p = start_prosody(str(tmp_path), users=("alice", "bob"), websocket=True)
    comp = Component(str(tmp_path), p, OWNERS)
    httpd = serve(BROWSER)

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone", JINGLE_AUDIO).online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed")

        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?ws=ws://127.0.0.1:{p.http}/xmpp-websocket"
        proc = await asyncio.create_subprocess_exec(
            "node", os.path.join(BROWSER, "roster.mjs"), url, "bob@localhost", "pw-bob", ALICE, str(shots),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        browser = Browser(proc)
        try:
            assert await browser.line() == "logged-in"
            assert await browser.line() == "added"
            await browser.expect("online")
            shot(await browser.ask("shot 1-online"), capsys)

            phone.send_presence(pshow="away", pstatus="Walking")
            await browser.expect("away")
            shot(await browser.ask("shot 2-away"), capsys)

            # A second device that is available beats the phone's away.
            laptop = await Client("alice@localhost/laptop").online(p.c2s)
            await browser.expect("online")

            phone.send_presence(pshow="dnd")
            await laptop.offline()
            await browser.expect("dnd")
            shot(await browser.ask("shot 3-dnd"), capsys)

            await phone.offline()
            await browser.expect("offline")
            shot(await browser.ask("shot 4-offline"), capsys)
            assert await browser.ask("quit") == "bye"
            await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        frames = (shots / "frames.xml").read_text()
        assert f"from='{ALICE}/chat'" in frames or f'from="{ALICE}/chat"' in frames, "the browser saw her class presence"
        for secret in ("alice@localhost", "/phone", "/laptop"):
            assert secret not in frames, f"Bob's browser learned {secret!r}"

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
        httpd.shutdown()
