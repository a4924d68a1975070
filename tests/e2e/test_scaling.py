"""How it scales (issue 6, README "How it scales"): several instances,
each owning its own owners on its own subdomain, run side by side against
one server without interfering. Here: unified.localhost (Alice) and
east.localhost (Carol) on one Prosody; Bob watches and calls both."""
import asyncio

from harness import DOMAIN, JINGLE_AUDIO, JMI, Client, Component, presence, show_of, start_prosody

EAST = "east.localhost"
ALICE = f"alice@{DOMAIN}"
CAROL = f"carol@{EAST}"


def owner(name):
    return f"""[[owners]]
name = "{name}"
accounts = ["{name}@localhost"]
subscription = "open"
"""


def test_two_instances_on_two_subdomains_share_one_server(tmp_path):
    p = start_prosody(str(tmp_path), users=("alice", "bob", "carol"),
                      more_components=[(EAST, "east-secret")])
    west = Component(str(tmp_path), p, owner("alice"), name="west")
    east = Component(str(tmp_path), p, owner("carol"), name="east", domain=EAST, secret="east-secret")

    async def scenario():
        west.start()
        east.start()
        alice = await Client("alice@localhost/phone", JINGLE_AUDIO + [JMI]).online(p.c2s)
        carol = await Client("carol@localhost/phone", JINGLE_AUDIO + [JMI]).online(p.c2s)
        await alice.wait_for(presence(ALICE, "subscribe"))
        alice.send_presence(pto=ALICE, ptype="subscribed")
        await carol.wait_for(presence(CAROL, "subscribe"))
        carol.send_presence(pto=CAROL, ptype="subscribed")

        bob = await Client("bob@localhost/pc", JINGLE_AUDIO + [JMI]).online(p.c2s)
        bob.send_presence(pto=ALICE, ptype="subscribe")
        bob.send_presence(pto=CAROL, ptype="subscribe")
        await bob.wait_for(presence(f"{ALICE}/audio"), what="Alice via the west instance")
        await bob.wait_for(presence(f"{CAROL}/audio"), what="Carol via the east instance")

        # Each instance knows only its own owners and watchers.
        assert "carol" not in west.log_text() and "alice" not in east.log_text()
        bob.send_raw(f"<iq type='get' id='x1' to='carol@{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
        miss = await bob.wait_for(lambda el: el.get("id") == "x1")
        assert miss.get("type") == "error", "west does not serve east's owners"

        # A call to Carol rings Carol's phone only, through east.
        since_a = alice.mark()
        bob.send_raw(f"<message type='chat' to='{CAROL}'><propose xmlns='{JMI}' id='c1'>"
                     f"<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose></message>")
        ring = await carol.wait_for(lambda el: el.find("{%s}propose" % JMI) is not None, what="Carol ringing")
        assert ring.get("from").split("/")[0].endswith("@" + EAST), "Carol's call comes from east's proxy JID"
        bob.send_raw(f"<message type='chat' to='{CAROL}'><retract xmlns='{JMI}' id='c1'/></message>")
        await asyncio.sleep(0.5)
        assert not alice.received(lambda el: el.find("{%s}propose" % JMI) is not None, since_a)

        # West stops: Bob sees Alice go, and Carol's changes still reach him.
        since = bob.mark()
        west.stop()
        await bob.wait_for(presence(f"{ALICE}/chat", "unavailable"), since)
        carol.send_presence(pshow="away")
        p_away = await bob.wait_for(presence(f"{CAROL}/chat"), since, what="Carol's change via east")
        assert show_of(p_away) == "away"
        for c in (alice, carol, bob):
            await c.offline()

    try:
        asyncio.run(scenario())
    finally:
        west.stop()
        east.stop()
        p.stop()
