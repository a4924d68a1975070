"""A browser client shows it (issue 6): Converse.js, served from this
machine, logged in to a real Prosody over websocket in headless Chromium.
Bob adds alice@unified.localhost through Converse's own "Add a contact"
form and his roster follows her devices; then he chats with her in
Converse's UI, her phone's XEP-0184 receipt shows as Converse's check mark
and her reply shows in his chat with her. Nothing his browser receives
names one of her devices. The screenshots are kept; their paths are
printed."""
import asyncio
import base64
import json
import os
import struct
import xml.etree.ElementTree as ET
import zlib

from harness import C, DOMAIN, JINGLE_AUDIO, ROOT, Client, Component, presence, serve_directory, start_prosody

ALICE = f"alice@{DOMAIN}"
RECEIPTS = "{urn:xmpp:receipts}"
BROWSER = os.path.join(ROOT, "tests", "browser")
OWNERS = """[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


def serve(directory):
    return serve_directory(directory)


def shot(answer, capsys):
    """Prints a screenshot's path past pytest's capture, so that
    scripts/test shows where to look."""
    assert answer.startswith("shot ") and os.path.getsize(answer[5:]) > 0, answer
    with capsys.disabled():
        print(f"\nscreenshot: {answer[5:]}", flush=True)


def square_png(size=64, rgb=(0xc0, 0x30, 0x60)):
    """A square PNG of one colour: her photo, big enough to see."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + bytes(rgb) * size for _ in range(size))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def phone_client(*features):
    """Alice's phone: slixmpp's own XEP-0184 plugin answers every receipt
    request, as a real client does."""
    phone = Client("alice@localhost/phone", *features)
    phone.register_plugin("xep_0184")
    phone.register_plugin("xep_0054")
    return phone


def has_receipt(frames, msgid):
    """Whether one of the frames Bob's browser received (one stanza each)
    is her receipt for his message `msgid`, from her chat JID."""
    for frame in frames.split("\n"):
        try:
            el = ET.fromstring(frame)
        except ET.ParseError:
            continue
        got = el.find(RECEIPTS + "received")
        if el.tag == C + "message" and el.get("from") == f"{ALICE}/chat" \
                and got is not None and got.get("id") == msgid:
            return True
    return False


def chat_from(frm, body):
    return lambda el: (el.tag == C + "message" and el.get("from") == frm
                       and el.findtext(C + "body") == body)


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

    async def answer(self, command, word):
        """The JSON after `word` in the answer to `command`."""
        answer = await self.ask(command)
        assert answer.startswith(word + " "), f"{command!r}: {answer}"
        return json.loads(answer[len(word) + 1:])

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
        phone = await phone_client(JINGLE_AUDIO).online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"), what="the linking request")
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed")
        # Her name and photo, set in her own client (issue 17).
        photo = square_png()
        card = phone["xep_0054"].make_vcard()
        card["FN"] = "Alice Liddell"
        card["PHOTO"]["TYPE"] = "image/png"
        card["PHOTO"]["BINVAL"] = photo
        await phone["xep_0054"].publish_vcard(card, timeout=10)
        phone.send_presence()
        await comp.await_log("her profile changed")

        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?ws=ws://127.0.0.1:{p.http}/xmpp-websocket"
        proc = await asyncio.create_subprocess_exec(
            "node", os.path.join(BROWSER, "roster.mjs"), url, "bob@localhost", "pw-bob", ALICE, str(shots), "",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        browser = Browser(proc)
        try:
            assert await browser.line() == "logged-in"
            assert await browser.line() == "added"
            await browser.expect("online")
            # Bob gave her no name: Converse shows the one on her card,
            # and her photo, both served by alice@unified.localhost.
            shown = await browser.answer("profile Alice Liddell", "profile")
            assert base64.b64decode(shown["avatar"].split(",", 1)[1]) == photo, shown["avatar"][:80]
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

            # Bob chats with her in Converse: click, type, Enter. Her phone
            # gets it from Bob's proxy full JID, with Converse's id and its
            # receipt request, and acknowledges it on its own (xep_0184).
            phone = await phone_client(JINGLE_AUDIO).online(p.c2s)
            await browser.expect("online")
            since = phone.mark()
            text = "Hi Alice, are you there?"
            sent = await browser.answer(f"send {text}", "sent")
            msgid, bob = sent["msgid"], sent["jid"]
            assert msgid and bob and bob.startswith("bob@localhost/"), sent
            assert sent["stanza"] and "urn:xmpp:receipts" in sent["stanza"], \
                f"Converse asked for no receipt: {sent['stanza']}"
            proxy = "bob\\40localhost@" + DOMAIN + "/" + bob.split("/", 1)[1]
            got = await phone.wait_for(chat_from(proxy, text), since, what=f"Bob's message from {proxy}")
            assert got.get("id") == msgid, f"the id changed on the way: {msgid} -> {got.get('id')}"
            assert got.find(RECEIPTS + "request") is not None, "the receipt request was dropped"
            answer = await browser.ask(f"delivered {msgid}")
            assert answer == f"delivered {msgid}", f"Converse never showed Bob's message delivered: {answer}"

            # She answers from the phone, to the JID his message came from,
            # asking for a receipt; Bob reads it in his chat with
            # alice@unified.localhost and Converse's receipt reaches her phone
            # with her id.
            reply = "Yes, here!"
            since = phone.mark()
            out = phone.make_message(mto=proxy, mbody=reply, mtype="chat")
            out["request_receipt"] = True
            out.send()
            shown = await browser.answer(f"reply {reply}", "reply")
            assert shown["from"] == f"{ALICE}/chat", f"her reply came from elsewhere: {shown}"
            assert shown["msgid"] == out["id"], f"the id changed on the way: {out['id']} -> {shown['msgid']}"
            back = await phone.wait_for(lambda el: el.get("from") == proxy and el.find(RECEIPTS + "received") is not None,
                                        since, what="Converse's receipt for her reply")
            assert back.find(RECEIPTS + "received").get("id") == out["id"], "the receipt names another id"
            shot(await browser.ask("shot 5-delivered"), capsys)
            await phone.offline()
            assert await browser.ask("quit") == "bye"
            await asyncio.wait_for(proc.wait(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

        frames = (shots / "frames.xml").read_text()
        assert f"from='{ALICE}/chat'" in frames or f'from="{ALICE}/chat"' in frames, "the browser saw her class presence"
        assert has_receipt(frames, msgid), "the check mark came without her receipt"
        for secret in ("alice@localhost", "/phone", "/laptop"):
            assert secret not in frames, f"Bob's browser learned {secret!r}"

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
        httpd.shutdown()
