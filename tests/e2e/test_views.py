"""Views (issue 19): Alice decides what each watcher sees. Bob, in her
default view, sees everything; Carol, whom Alice put in a view by chat,
sees her audio without status text and her chat only as available; a
view that hides audio makes Carol's call busy. Real servers, real binary,
slixmpp watchers; then Converse.js in two headless Chromiums shows the
two rosters differ."""
import asyncio
import os

import pytest

from harness import C, DOMAIN, JINGLE_AUDIO, JMI, SERVERS, Client, Component, presence, show_of, start_prosody
from test_browser import BROWSER, Browser, serve

ALICE = f"alice@{DOMAIN}"
AUDIO = f"{ALICE}/audio"
CHAT = f"{ALICE}/chat"
OWNERS = """[[views]]
name = "colleagues"
shows = "audio show, chat presence"

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "carol"), kind=request.param)
    comp = Component(str(tmp_path), p, OWNERS)
    yield p, comp
    comp.stop()
    p.stop()


async def tell(device, body):
    """A chat command from her device; the service's answer."""
    since = device.mark()
    device.send_raw(f"<message type='chat' to='{DOMAIN}'><body>{body}</body></message>")
    reply = await device.wait_for(lambda el: el.get("from") == DOMAIN and el.find(C + "body") is not None, since,
                                  what=f"the answer to {body!r}")
    return reply.find(C + "body").text


def latest(client, frm, since=0):
    got = client.received(lambda el: el.tag == C + "presence" and el.get("from") == frm, since)
    return got[-1] if got else None


def test_two_watchers_in_different_views_see_different_presences(world):
    p, comp = world

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI], caps_node="https://dino.im").online(
            p.c2s, show="away", status="Lunch")
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed")
        phone.send_presence(pshow="away", pstatus="Lunch")
        reply = await tell(phone, "view carol@localhost colleagues")
        assert reply == "carol@localhost sees your view colleagues now.", reply
        bob = await Client("bob@localhost/pc").online(p.c2s)
        carol = await Client("carol@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
        for w in (bob, carol):
            w.send_presence(pto=ALICE, ptype="subscribe")
            await w.wait_for(presence(AUDIO), what="/audio available")
        await asyncio.sleep(1.0)
        assert show_of(latest(bob, AUDIO)) == "away"
        assert latest(bob, AUDIO).findtext(C + "status") == "Lunch"
        assert show_of(latest(carol, AUDIO)) == "away", "Carol sees the show of /audio"
        assert latest(carol, AUDIO).find(C + "status") is None, "... not its text"
        assert show_of(latest(carol, CHAT)) is None, "and /chat only as available"

        # The same device change reaches each as their view shows it.
        s_bob, s_carol = bob.mark(), carol.mark()
        phone.send_presence(pshow="dnd", pstatus="Meeting")
        await bob.wait_for(lambda el: presence(AUDIO)(el) and show_of(el) == "dnd", s_bob)
        await carol.wait_for(lambda el: presence(AUDIO)(el) and show_of(el) == "dnd", s_carol)
        await asyncio.sleep(1.0)
        assert latest(bob, AUDIO).findtext(C + "status") == "Meeting"
        assert not carol.received(presence(CHAT), s_carol), "chat's show is not hers to see: no change"

        # Alice defines a view by chat that hides audio and moves Carol:
        # Carol hears exactly the difference, Bob nothing.
        s_bob, s_carol = bob.mark(), carol.mark()
        reply = await tell(phone, "view add chatonly chat presence")
        assert reply.startswith("View chatonly: chat presence."), reply
        reply = await tell(phone, "view carol@localhost chatonly")
        gone = await carol.wait_for(presence(AUDIO, "unavailable"), s_carol, what="/audio going")
        assert gone is not None
        await asyncio.sleep(1.0)
        assert [el.get("from") for el in carol.received(lambda el: el.tag == C + "presence", s_carol)] == [AUDIO]
        assert not bob.received(lambda el: el.tag == C + "presence", s_bob), bob.raw_since(s_bob)

        # She calls: busy, as if Alice had no audio device; her phone
        # never rings.
        s_carol, s_phone = carol.mark(), phone.mark()
        carol.send_raw(f"<message type='chat' to='{ALICE}'><propose xmlns='{JMI}' id='V1'>"
                       "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        rej = await carol.wait_for(lambda el: el.find(f"{{{JMI}}}reject") is not None, s_carol, what="busy")
        assert rej.find(f"{{{JMI}}}reject/{{urn:xmpp:jingle:1}}reason/{{urn:xmpp:jingle:1}}busy") is not None
        await asyncio.sleep(0.5)
        assert not phone.received(lambda el: el.find(f"{{{JMI}}}propose") is not None, s_phone)

        # "preview" tells Alice what Carol has now, stanza by stanza.
        preview = await tell(phone, "preview carol@localhost")
        assert f"• {CHAT}: available" in preview, preview
        assert "Their audio call now would ring: nobody: their view hides it" in preview, preview

        # Nothing Carol ever received tells what her views hide.
        for raw in carol.raw_since(0):
            for secret in ("Lunch", "Meeting", "alice@localhost", "phone", "/video"):
                assert secret not in raw, f"Carol saw {secret!r}: {raw}"
        for c in (phone, bob, carol):
            await c.offline()

    asyncio.run(scenario())


def test_converse_shows_two_rosters_their_own_view(tmp_path):
    """Bob's and Carol's Converse.js, side by side: Alice is busy for Bob,
    only online for Carol (in the built-in `reachable` view)."""
    assert os.path.isdir(os.path.join(BROWSER, "node_modules", "converse.js")), \
        "run scripts/install-deps (npm ci in tests/browser)"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    p = start_prosody(str(tmp_path), users=("alice", "bob", "carol"), websocket=True)
    comp = Component(str(tmp_path), p, OWNERS)
    httpd = serve(BROWSER)

    async def open_browser(user, folder):
        os.makedirs(folder, exist_ok=True)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html?ws=ws://127.0.0.1:{p.http}/xmpp-websocket"
        proc = await asyncio.create_subprocess_exec(
            "node", os.path.join(BROWSER, "roster.mjs"), url, f"{user}@localhost", f"pw-{user}", ALICE,
            str(folder), "", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        browser = Browser(proc)
        assert await browser.line() == "logged-in"
        assert await browser.line() == "added"
        return proc, browser

    async def scenario():
        comp.start()
        phone = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI]).online(p.c2s)
        await phone.wait_for(presence(ALICE, "subscribe"))
        phone.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("account link changed")
        assert (await tell(phone, "view carol@localhost reachable")).endswith("reachable now.")
        procs = []
        try:
            bob_proc, bob = await open_browser("bob", shots / "bob")
            procs.append(bob_proc)
            carol_proc, carol = await open_browser("carol", shots / "carol")
            procs.append(carol_proc)
            await bob.expect("online")
            await carol.expect("online")
            phone.send_presence(pshow="dnd", pstatus="Meeting")
            await bob.expect("dnd")
            await asyncio.sleep(1.0)
            await carol.expect("online")
            for b, name in ((bob, "bob"), (carol, "carol")):
                answer = await b.ask(f"shot {name}-dnd")
                assert answer.startswith("shot ")
                print(f"\nscreenshot: {answer[5:]}")
            for b in (bob, carol):
                assert await b.ask("quit") == "bye"
            for proc in procs:
                await asyncio.wait_for(proc.wait(), 20)
        finally:
            for proc in procs:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        frames = (shots / "carol" / "frames.xml").read_text()
        assert "Meeting" not in frames and "<show>dnd</show>" not in frames, "Carol's browser saw what her view hides"
        assert "Meeting" in (shots / "bob" / "frames.xml").read_text()
        await phone.offline()

    try:
        asyncio.run(scenario())
    finally:
        comp.stop()
        p.stop()
        httpd.shutdown()
