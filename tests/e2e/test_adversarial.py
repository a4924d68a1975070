"""Adversarial contacts end to end (DESIGN.md section 1, the privacy
invariant): Bob (a watcher) and Eve (a stranger) try everything a curious
client can against alice@unified.localhost, her class resources, proxy JIDs
and the domain. Every IQ must get exactly one proper answer (a result, or an
RFC 6120 error with a defined condition), and nothing Bob or Eve receive
during the whole test may name Alice's devices, her real JID, her client's
caps node or software. Messages to her must still reach her devices, and
her devices' receipts, markers and JMI ringing (sent from her device full
JIDs, as real clients do) must come back clean.

Real server (Prosody and ejabberd), the real binary, slixmpp clients."""
import asyncio
import itertools
import time
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from harness import C, DOMAIN, JINGLE_AUDIO, JMI, SERVERS, Client, Component, iq_reply, presence, start_prosody

ALICE = f"alice@{DOMAIN}"
CLASSES = ("chat", "audio", "video", "files")
PROXY_BOB = rf"bob\40localhost@{DOMAIN}"
PROXY_EVE = rf"eve\40localhost@{DOMAIN}"
# A stranger who guessed Alice's real JID tries it as a proxy JID.
PROXY_ALICE = rf"alice\40localhost@{DOMAIN}"

LAPTOP, PHONE = "lapt0p-x2", "ph0ne-q7"
NODE = "https://secret-client.example/caps"
SOFTWARE, VERSION, OS = "SekritClient", "9.8.7-sekrit", "SekritOS 12"
ODD_FEATURE = "urn:x-sekrit:whiteboard:0"   # her client's own feature: a fingerprint
STATUS = "Writing chapter 7 of the novel"   # for watchers only
SECRETS = ("alice@localhost", LAPTOP, PHONE, "lapt0p", "ph0ne", "secret-client.example",
           SOFTWARE, VERSION, "sekrit", "Sekrit")

# Each contact sends ~320 stanzas at once: the flood limits are raised so
# that they are not what answers (flooding is test_faults' business).
OWNERS = """[limits]
stanzas_per_sec = 2000
stanza_burst = 4000

[calls]
ring_timeout_secs = 20

[[owners]]
name = "alice"
accounts = ["alice@localhost"]
subscription = "open"
"""

# A call offer with ICE candidates, as a contact's client sends it.
CONTENT = ("<content xmlns='urn:xmpp:jingle:1' creator='initiator' name='0' senders='both'>"
           "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'>"
           "<payload-type id='111' name='opus' clockrate='48000' channels='2'/></description>"
           "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='8Xgj' pwd='yS0LQvIRAHtOwNVQsvz2p3Zd'>"
           "<candidate component='1' foundation='1' generation='0' id='e1' ip='203.0.113.20' network='1' "
           "port='48307' priority='1686052607' protocol='udp' type='srflx'/></transport></content>")

STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DEFINED = {
    "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone", "internal-server-error",
    "item-not-found", "jid-malformed", "not-acceptable", "not-allowed", "not-authorized",
    "policy-violation", "recipient-unavailable", "redirect", "registration-required",
    "remote-server-not-found", "remote-server-timeout", "resource-constraint", "service-unavailable",
    "subscription-required", "undefined-condition", "unexpected-request",
}
ERROR_TYPES = {"auth", "cancel", "continue", "modify", "wait"}
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
COMMANDS = "http://jabber.org/protocol/commands"
PUBSUB = "http://jabber.org/protocol/pubsub"
JINGLE = "urn:xmpp:jingle:1"
RECEIPTS = "urn:xmpp:receipts"
MARKERS = "urn:xmpp:chat-markers:0"


@pytest.fixture(params=SERVERS)
def world(tmp_path, request):
    p = start_prosody(str(tmp_path), kind=request.param)
    comp = Component(str(tmp_path), p, OWNERS)
    try:
        yield p, comp
    finally:
        comp.stop()
        p.stop()


# -- Alice's devices: real-looking clients ---------------------------------

async def device(resource):
    """One of Alice's devices: audio calls with JMI, a distinctive caps node,
    identity and software version; answers like a real client (slixmpp
    answers disco, version, last activity, time and ping by itself)."""
    d = Client(f"alice@localhost/{resource}", JINGLE_AUDIO + [JMI, RECEIPTS, MARKERS, ODD_FEATURE], caps_node=NODE)
    d.register_plugin("xep_0092", {"software_name": SOFTWARE, "version": VERSION, "os": OS})
    d.register_plugin("xep_0012")
    d.register_plugin("xep_0202")
    await d.plugin["xep_0030"].add_identity(category="client", itype="phone" if resource == PHONE else "pc",
                                      name=f"{SOFTWARE} {VERSION}")

    # Ids like real clients' (random-looking; a client that put its own
    # resource in an id would leak it itself).
    ids = itertools.count(1000 if resource == PHONE else 2000)
    sessions = set()

    def on_jingle(iq):
        if iq["type"] not in ("set", "get"):
            return
        j = iq.xml.find(f"{{{JINGLE}}}jingle")
        sid, frm, id_ = j.get("sid", ""), quoteattr(str(iq["from"])), quoteattr(iq["id"])
        if j.get("action") == "session-initiate":
            # Ack, ring, then decline: what a busy client does, from its
            # full JID.
            sessions.add(sid)
            d.send_raw(f"<iq type='result' id={id_} to={frm}/>")
            d.send_raw(f"<iq type='set' id='ring-{next(ids)}' to={frm}><jingle xmlns='{JINGLE}' action='session-info' "
                       f"sid={quoteattr(sid)}><ringing xmlns='urn:xmpp:jingle:apps:rtp:info:1'/></jingle></iq>")
            d.send_raw(f"<iq type='set' id='term-{next(ids)}' to={frm}><jingle xmlns='{JINGLE}' action='session-terminate' "
                       f"sid={quoteattr(sid)}><reason><decline/><text>not now</text></reason></jingle></iq>")
        elif sid in sessions:
            d.send_raw(f"<iq type='result' id={id_} to={frm}/>")
        else:
            # A Jingle IQ for a session it does not know (XEP-0166 §7.2).
            d.send_raw(f"<iq type='error' id={id_} to={frm}>"
                       f"<error type='cancel'><item-not-found xmlns='{STANZAS}'/>"
                       "<unknown-session xmlns='urn:xmpp:jingle:errors:1'/></error></iq>")
    d.register_handler(Callback("unknown-session", MatchXPath(f"{C}iq/{{{JINGLE}}}jingle"), on_jingle))

    def on_message(msg):
        el, frm = msg.xml, str(msg["from"])
        if "\\40" not in frm or el.get("type") == "error":
            return  # only what contacts send through proxy JIDs
        to = quoteattr(frm)
        prop = el.find(f"{{{JMI}}}propose")
        if prop is not None:
            d.send_raw(f"<message type='chat' to={to}><ringing xmlns='{JMI}' id={quoteattr(prop.get('id', ''))}/></message>")
        mid = el.get("id")
        if mid and el.find(f"{{{RECEIPTS}}}request") is not None:
            d.send_raw(f"<message type='chat' to={to} id='rcpt-{next(ids)}'>"
                       f"<received xmlns='{RECEIPTS}' id={quoteattr(mid)}/></message>")
        if mid and el.find(f"{{{MARKERS}}}markable") is not None:
            d.send_raw(f"<message type='chat' to={to} id='mark-{next(ids)}'>"
                       f"<displayed xmlns='{MARKERS}' id={quoteattr(mid)}/></message>")
    d.register_handler(Callback("contact-message", MatchXPath(f"{C}message"), on_message))
    return d


# -- probes ----------------------------------------------------------------

def iq_payloads(caps_ver):
    """(label, type, payload, strings the answer may echo from the request)."""
    her_node = f"{NODE}#{caps_ver}"
    return [
        ("disco#info", "get", f"<query xmlns='{DISCO_INFO}'/>", ()),
        ("disco#info her-node", "get", f"<query xmlns='{DISCO_INFO}' node='{NODE}'/>", (NODE,)),
        ("disco#info her-node#ver", "get", f"<query xmlns='{DISCO_INFO}' node='{her_node}'/>", (her_node,)),
        ("disco#info commands-node", "get", f"<query xmlns='{DISCO_INFO}' node='{COMMANDS}'/>", ()),
        ("disco#items", "get", f"<query xmlns='{DISCO_ITEMS}'/>", ()),
        ("disco#items commands", "get", f"<query xmlns='{DISCO_ITEMS}' node='{COMMANDS}'/>", ()),
        ("disco#items her-node#ver", "get", f"<query xmlns='{DISCO_ITEMS}' node='{her_node}'/>", (her_node,)),
        ("disco#items pep-node", "get", f"<query xmlns='{DISCO_ITEMS}' node='urn:xmpp:avatar:metadata'/>", ()),
        ("version", "get", "<query xmlns='jabber:iq:version'/>", ()),
        ("last", "get", "<query xmlns='jabber:iq:last'/>", ()),
        ("time", "get", "<time xmlns='urn:xmpp:time'/>", ()),
        ("vcard-temp", "get", "<vCard xmlns='vcard-temp'/>", ()),
        ("ping", "get", "<ping xmlns='urn:xmpp:ping'/>", ()),
        ("roster", "get", "<query xmlns='jabber:iq:roster'/>", ()),
        ("pubsub avatar", "get", f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:avatar:metadata'/></pubsub>", ()),
        ("pubsub nick", "get", f"<pubsub xmlns='{PUBSUB}'><items node='http://jabber.org/protocol/nick'/></pubsub>", ()),
        ("pubsub omemo devicelist", "get",
         f"<pubsub xmlns='{PUBSUB}'><items node='eu.siacs.conversations.axolotl.devicelist'/></pubsub>", ()),
        ("mam", "set", "<query xmlns='urn:xmpp:mam:2' queryid='q1'/>", ()),
        ("adhoc watchers", "set", f"<command xmlns='{COMMANDS}' node='watchers' action='execute'/>", ()),
        ("adhoc devices", "set", f"<command xmlns='{COMMANDS}' node='devices' action='execute'/>", ()),
        ("adhoc status", "set", f"<command xmlns='{COMMANDS}' node='status' action='execute'/>", ()),
        ("jingle session-info", "set", f"<jingle xmlns='{JINGLE}' action='session-info' sid='made-up-1'/>", ()),
        ("jingle transport-info", "set",
         f"<jingle xmlns='{JINGLE}' action='transport-info' sid='made-up-2'><content creator='initiator' name='0'>"
         "<transport xmlns='urn:xmpp:jingle:transports:ice-udp:1' ufrag='a' pwd='b'/></content></jingle>", ()),
    ]


class Probes:
    """IQs sent by one client, and the checks on their answers."""

    def __init__(self, client, who):
        self.client, self.who = client, who
        self.sent = {}      # id -> (label, to, type, payload element, echoes)
        self.silent = {}    # id -> (label, to): must get no answer at all
        self.n = 0

    def _id(self):
        self.n += 1
        return f"{self.who}-{self.n}"

    def iq(self, to, label, typ, payload, echoes=()):
        id_ = self._id()
        self.sent[id_] = (label, to, typ, ET.fromstring(payload), tuple(echoes))
        self.client.send_raw(f"<iq type='{typ}' id='{id_}' to={quoteattr(to)}>{payload}</iq>")

    def no_answer(self, to, label, raw_fmt):
        id_ = self._id()
        self.silent[id_] = (label, to)
        self.client.send_raw(raw_fmt.format(id=id_, to=quoteattr(to)))

    def answers(self, id_):
        return [(raw, el) for raw, el in self.client.inbox
                if el.get("id") == id_ and el.tag in (C + "iq", C + "message", C + "presence")]

    async def settle(self, timeout=8.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.answers(i) for i in self.sent):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.7)   # duplicates arrive, if any

    def problems(self):
        out = []
        for id_, (label, to, typ, payload, _) in self.sent.items():
            what = f"[{self.who}] {label} ({typ}) to {to} id={id_}"
            got = [(raw, el) for raw, el in self.answers(id_) if el.tag == C + "iq"]
            if not got:
                out.append(f"NO ANSWER: {what}")
                continue
            if len(got) > 1:
                out.append(f"DUPLICATE ANSWERS ({len(got)}): {what}:\n    " + "\n    ".join(r for r, _ in got))
            raw, el = got[0]
            bad = check_answer(el, to, payload)
            if bad:
                out.append(f"IMPROPER ANSWER ({bad}): {what}:\n    {raw}")
        for id_, (label, to) in self.silent.items():
            got = self.answers(id_)
            if got:
                out.append(f"ANSWERED WHAT MUST NOT BE ANSWERED: [{self.who}] {label} to {to}:\n    "
                           + "\n    ".join(r for r, _ in got))
        return out

    def table(self):
        """What each address answered, one line per address (printed)."""
        from harness import error_condition
        rows = {}
        for id_, (label, to, typ, payload, _) in self.sent.items():
            got = [el for _, el in self.answers(id_) if el.tag == C + "iq"]
            if not got:
                short = "NO ANSWER"
            elif got[0].get("type") == "error":
                short = error_condition(got[0]) or "error?"
            else:
                short = "result"
            if len(got) > 1:
                short += f" x{len(got)}"
            rows.setdefault(to, {}).setdefault(short, []).append(label)
        return [f"  [{self.who}] {to}: " + "; ".join(f"{a}: {', '.join(ls)}" for a, ls in by.items())
                for to, by in rows.items()]

    def echoes_of(self, id_):
        return self.sent[id_][4] if id_ in self.sent else ()


def check_answer(el, to, payload):
    """Why `el` is not a proper answer to an IQ to `to` with `payload`."""
    typ = el.get("type")
    if el.get("from") != to:
        return f"from {el.get('from')!r}, not the address asked"
    if typ == "error":
        err = el.find(C + "error")
        if err is None:
            return "type=error without <error/>"
        if err.get("type") not in ERROR_TYPES:
            return f"error type {err.get('type')!r}"
        conds = [c.tag.split("}")[1] for c in err
                 if c.tag.startswith("{" + STANZAS + "}") and not c.tag.endswith("}text")]
        if len(conds) != 1 or conds[0] not in DEFINED:
            return f"error conditions {conds!r}: need exactly one RFC 6120 defined condition"
        return None
    if typ != "result":
        return f"type {typ!r}"
    kids = list(el)
    if len(kids) > 1:
        return "result with more than one payload"
    if kids:
        if kids[0].tag.split("}")[0] != payload.tag.split("}")[0]:
            return f"result payload {kids[0].tag} for a {payload.tag} request"
    ns = payload.tag.split("}")[0][1:]
    if ns in (DISCO_INFO, DISCO_ITEMS):
        if not kids:
            return "disco result without <query/>"
        # XEP-0030 §3.2 / §4.2: the answer mirrors the node asked about, and
        # an unknown node is item-not-found.
        if payload.get("node") != kids[0].get("node"):
            return f"disco result for node {payload.get('node')!r} answers node {kids[0].get('node')!r}"
    return None


def scan(client, who, probes, extra_secrets=()):
    """Every stanza `client` received, checked for Alice's secrets. An
    answer may echo what the prober itself put in the request (a guessed
    caps node): that part is masked, the rest is checked."""
    out = []
    for raw, el in client.inbox:
        text = raw
        for echo in probes.echoes_of(el.get("id")):
            text = text.replace(echo, "<ECHO-OF-REQUEST>")
        for secret in SECRETS + tuple(extra_secrets):
            if secret in text:
                out.append(f"LEAK of {secret!r} to {who}:\n    {raw}")
                break
    return out


def jmi_msg(name, frm_prefix=None):
    def pred(el):
        j = el.find("{%s}%s" % (JMI, name))
        return el.tag == C + "message" and j is not None and (frm_prefix is None or el.get("from", "").startswith(frm_prefix))
    return pred


def jingle_action(action):
    def pred(el):
        j = el.find(f"{{{JINGLE}}}jingle")
        return el.tag == C + "iq" and j is not None and j.get("action") == action
    return pred


def body_is(text):
    def pred(el):
        b = el.find(C + "body")
        return el.tag == C + "message" and b is not None and b.text == text
    return pred


def test_curious_contacts_learn_nothing_of_her_devices(world):
    p, comp = world

    async def scenario(clients):
        comp.start()
        laptop = await device(LAPTOP)
        clients.append(laptop)
        await laptop.online(p.c2s, status=STATUS, priority=5)
        await laptop.wait_for(presence(ALICE, "subscribe"), what="the linking request")
        # Her profile and OMEMO device list, as careless as a real one: her
        # card names her account and her phone, her device list labels
        # name her phone and software. All of it is what alice@D serves.
        s_l = laptop.mark()
        laptop.send_raw("<iq type='set' id='card-1'><vCard xmlns='vcard-temp'><FN>Alice Liddell</FN>"
                        "<NICKNAME>Alice</NICKNAME><JABBERID>alice@localhost</JABBERID>"
                        "<EMAIL><INTERNET/><USERID>alice@localhost</USERID></EMAIL>"
                        f"<DESC>call me on {PHONE} or {LAPTOP}</DESC></vCard></iq>")
        laptop.send_raw(f"<iq type='set' id='keys-1'><pubsub xmlns='{PUBSUB}'>"
                        "<publish node='eu.siacs.conversations.axolotl.devicelist'><item id='current'>"
                        "<list xmlns='eu.siacs.conversations.axolotl'>"
                        f"<device id='4242' label='{SOFTWARE} on {PHONE}'/><device id='4343'/></list></item></publish>"
                        "</pubsub></iq>")
        for id_ in ("card-1", "keys-1"):
            r = await laptop.wait_for(iq_reply(id_), s_l, what=f"her server's answer to {id_}")
            assert r.get("type") == "result", r
        laptop.send_presence(pto=ALICE, ptype="subscribed")
        await comp.await_log("her profile changed")
        phone = await device(PHONE)
        clients.append(phone)
        await phone.online(p.c2s, status=STATUS, priority=5)
        # Her phone's caps ver, as her laptop sees it in the phone's presence.
        pp = await laptop.wait_for(presence(f"alice@localhost/{PHONE}"), what="the phone's presence")
        caps_ver = pp.find("{http://jabber.org/protocol/caps}c").get("ver")

        # Her phone's client also puts its own extensions in its presence,
        # naming itself (legacy caps style); only the component sees them.
        # Shown as "chat", it is her best device: what watchers see is its.
        phone.send_raw(f"<presence><show>chat</show><priority>5</priority><status>{STATUS}</status>"
                       f"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='{NODE}' "
                       f"ver='{caps_ver}'/>"
                       "<x xmlns='vcard-temp:x:update'><photo/></x>"
                       f"<client xmlns='urn:x-sekrit:client' name='{SOFTWARE}' version='{VERSION}'>{NODE}</client>"
                       "</presence>")
        bob = Client("bob@localhost/pc", JINGLE_AUDIO + [JMI])
        clients.append(bob)
        await bob.online(p.c2s)
        eve = Client("eve@localhost/x", JINGLE_AUDIO + [JMI])
        clients.append(eve)
        await eve.online(p.c2s)

        bob.send_presence(pto=ALICE, ptype="subscribe")
        await bob.wait_for(presence(f"{ALICE}/audio"), what="/audio available (devices learned)")
        chat = await bob.wait_for(presence(f"{ALICE}/chat"), what="/chat available")
        assert chat.find(C + "status") is not None and chat.find(C + "status").text == STATUS
        await asyncio.sleep(0.5)

        # ---- her card and keys, as served: her name, no account, no device
        for who, c in (("bob", bob), ("eve", eve)):
            s_c = c.mark()
            c.send_raw(f"<iq type='get' id='{who}-card' to='{ALICE}'><vCard xmlns='vcard-temp'/></iq>")
            c.send_raw(f"<iq type='get' id='{who}-keys' to='{ALICE}'><pubsub xmlns='{PUBSUB}'>"
                       "<items node='eu.siacs.conversations.axolotl.devicelist'/></pubsub></iq>")
            card = await c.wait_for(iq_reply(f"{who}-card"), s_c, what="her card")
            assert card.findtext(".//{vcard-temp}FN") == "Alice Liddell", ET.tostring(card)
            assert card.findtext(".//{vcard-temp}JABBERID") == ALICE, ET.tostring(card)
            assert card.find(".//{vcard-temp}DESC") is None and card.find(".//{vcard-temp}EMAIL") is None
            keys = await c.wait_for(iq_reply(f"{who}-keys"), s_c, what="her device list")
            ids = [d.get("id") for d in keys.iter("{eu.siacs.conversations.axolotl}device")]
            assert ids == ["4242", "4343"], ET.tostring(keys)
            assert all(d.get("label") is None for d in keys.iter("{eu.siacs.conversations.axolotl}device"))

        # ---- calls: a JMI propose then a retract, from each of them -------
        learned = {}
        for who, c in (("bob", bob), ("eve", eve)):
            s_c, s_l, s_p = c.mark(), laptop.mark(), phone.mark()
            sid = f"{who}-call-1"
            c.send_raw(f"<message type='chat' id='m-{sid}' to='{ALICE}'><propose xmlns='{JMI}' id='{sid}'>"
                       "<description xmlns='urn:xmpp:jingle:apps:rtp:1' media='audio'/></propose>"
                       f"<request xmlns='{RECEIPTS}'/><store xmlns='urn:xmpp:hints'/></message>")
            proxy = f"{who}\\40localhost@{DOMAIN}/"
            rang = await laptop.wait_for(jmi_msg("propose", proxy), s_l, what=f"{who}'s call ringing the laptop")
            await phone.wait_for(jmi_msg("propose", proxy), s_p, what=f"{who}'s call ringing the phone")
            learned[who] = rang.get("from")
            # Her devices answered <ringing/> from their full JIDs.
            await c.wait_for(jmi_msg("ringing"), s_c, what="ringing from her devices")
            # The other one forges a retract (and a Jingle terminate) of
            # this call: it must not end it.
            other = eve if c is bob else bob
            other.send_raw(f"<message type='chat' to='{ALICE}'><retract xmlns='{JMI}' id='{sid}'>"
                           f"<reason xmlns='{JINGLE}'><cancel/></reason></retract></message>")
            other.send_raw(f"<iq type='set' id='forged-{sid}' to='{ALICE}/audio'><jingle xmlns='{JINGLE}' "
                           f"action='session-terminate' sid='{sid}'><reason><cancel/></reason></jingle></iq>")
            await other.wait_for(iq_reply(f"forged-{sid}"), what="an answer to the forged terminate")
            await asyncio.sleep(0.3)
            forged = laptop.received(jmi_msg("retract"), s_l) + phone.received(jmi_msg("retract"), s_p) \
                + laptop.received(jingle_action("session-terminate"), s_l) + phone.received(jingle_action("session-terminate"), s_p)
            assert not forged, f"a forged retract/terminate from another contact ended {who}'s call: {forged}"
            c.send_raw(f"<message type='chat' to='{ALICE}'><retract xmlns='{JMI}' id='{sid}'>"
                       f"<reason xmlns='{JINGLE}'><cancel/></reason></retract></message>")
            await laptop.wait_for(jmi_msg("retract", proxy), s_l, what="the retract at the laptop")
            await phone.wait_for(jmi_msg("retract", proxy), s_p, what="the retract at the phone")

        # ---- a plain Jingle call that both her devices decline --------------
        for who, c in (("bob", bob), ("eve", eve)):
            s_c = c.mark()
            sid = f"{who}-jingle-1"
            c.send_raw(f"<iq type='set' id='{who}-si' to='{ALICE}/audio'><jingle xmlns='{JINGLE}' action='session-initiate' "
                       f"sid='{sid}' initiator='{who}@localhost/{c.boundjid.resource}'>{CONTENT}</jingle></iq>")
            ans = await c.wait_for(lambda el: el.get("id") == f"{who}-si" and el.tag == C + "iq", s_c,
                                   what="the answer to session-initiate")
            assert ans.get("type") == "result", ans
            term = await c.wait_for(lambda el: el.tag == C + "iq" and el.find(f"{{{JINGLE}}}jingle") is not None
                                    and el.find(f"{{{JINGLE}}}jingle").get("action") == "session-terminate", s_c,
                                    what="session-terminate after both declined")
            assert term.get("from") == f"{ALICE}/audio"
            c.send_raw(f"<iq type='result' id={quoteattr(term.get('id'))} to='{ALICE}/audio'/>")

        # ---- IQs at every address, from both -------------------------------
        targets = [ALICE] + [f"{ALICE}/{c}" for c in CLASSES] + [
            f"{ALICE}/nosuchresource",
            f"{PROXY_EVE}/x", PROXY_BOB, PROXY_ALICE, f"{PROXY_ALICE}/x",
            learned["eve"], learned["bob"],
            DOMAIN,
        ]
        s_laptop, s_phone = laptop.mark(), phone.mark()
        probes = {"bob": Probes(bob, "bob"), "eve": Probes(eve, "eve")}
        for who, pr in probes.items():
            for to in targets:
                for label, typ, payload, echoes in iq_payloads(caps_ver):
                    pr.iq(to, label, typ, payload, echoes)
                # RFC 6120 §8.2.3: answers and errors are never answered.
                pr.no_answer(to, "iq type=result", "<iq type='result' id='{id}' to={to}/>")
                pr.no_answer(to, "iq type=error",
                             "<iq type='error' id='{id}' to={to}><error type='cancel'>"
                             f"<item-not-found xmlns='{STANZAS}'/></error></iq>")
                pr.no_answer(to, "message type=error",
                             "<message type='error' id='{id}' to={to}><error type='cancel'>"
                             f"<service-unavailable xmlns='{STANZAS}'/></error></message>")
        await asyncio.gather(*(pr.settle() for pr in probes.values()))

        # ---- messages -------------------------------------------------------
        for who, c in (("bob", bob), ("eve", eve)):
            s_l, s_p = laptop.mark(), phone.mark()
            c.send_raw(f"<message type='chat' id='{who}-m1' to='{ALICE}'><body>{who}: hello</body>"
                       f"<request xmlns='{RECEIPTS}'/><markable xmlns='{MARKERS}'/>"
                       "<origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>")
            c.send_raw(f"<message type='chat' id='{who}-m2' to='{ALICE}'><body>{who}: hello!</body>"
                       f"<replace xmlns='urn:xmpp:message-correct:0' id='{who}-m1'/>"
                       f"<request xmlns='{RECEIPTS}'/></message>")
            c.send_raw(f"<message type='chat' id='{who}-m3' to='{ALICE}'><displayed xmlns='{MARKERS}' id='a-1'/></message>")
            for k, to in enumerate([f"{ALICE}/{cl}" for cl in CLASSES]
                                   + [f"{PROXY_EVE}/x", PROXY_BOB, PROXY_ALICE, learned[who]]):
                c.send_raw(f"<message type='chat' id='{who}-to-{k}' to={quoteattr(to)}><body>{who}: psst</body>"
                           f"<request xmlns='{RECEIPTS}'/></message>")
            for typ in ("groupchat", "headline", "normal"):
                c.send_raw(f"<message type='{typ}' id='{who}-{typ}' to='{ALICE}'><body>{who}: {typ}</body>"
                           f"<request xmlns='{RECEIPTS}'/></message>")
            for text in ("devices", "watchers", "status", "as alice devices", "help"):
                c.send_raw(f"<message type='chat' id='{who}-cmd-{text}' to='{DOMAIN}'><body>{text}</body></message>")
            # The path is live: her devices get what was sent to alice@D.
            for text in (f"{who}: hello", f"{who}: hello!"):
                got = None
                deadline = time.monotonic() + 10
                while got is None and time.monotonic() < deadline:
                    got = (laptop.received(body_is(text), s_l) or phone.received(body_is(text), s_p) or [None])[0]
                    await asyncio.sleep(0.05)
                assert got is not None, f"{text!r} never reached her devices"
                # From his proxy JID, one per resource of his.
                assert got.get("from") == rf"{who}\40localhost@{DOMAIN}/{c.boundjid.resource}"
            # ...and her devices' receipts come back to the sender.
            await c.wait_for(lambda el: (el.find(f"{{{RECEIPTS}}}received") is not None
                                         and el.find(f"{{{RECEIPTS}}}received").get("id") == f"{who}-m1"),
                             what="her receipt")
        # She replies by hand, and corrects it.
        laptop.send_raw(f"<message type='chat' id='a-1' to='{PROXY_BOB}'><body>hi bob</body>"
                        f"<markable xmlns='{MARKERS}'/></message>")
        laptop.send_raw(f"<message type='chat' id='a-2' to='{PROXY_BOB}'><body>hi Bob</body>"
                        "<replace xmlns='urn:xmpp:message-correct:0' id='a-1'/></message>")
        await bob.wait_for(body_is("hi Bob"), what="her corrected reply")

        # Eve, a stranger, tries presence too.
        eve.send_raw(f"<presence to='{ALICE}/chat'/>")
        eve.send_raw(f"<presence type='probe' to='{ALICE}'/>")
        await asyncio.sleep(1.0)

        # ---- verdict ----------------------------------------------------------
        problems = []
        for who, c in (("bob", bob), ("eve", eve)):
            problems += probes[who].problems()
            problems += scan(c, who, probes[who])
        for raw, el in eve.inbox:
            if el.tag == C + "presence" and el.get("from", "").startswith(ALICE) \
                    and (el.get("type") or "available") == "available":
                problems.append(f"PRESENCE TO A STRANGER (she never subscribed):\n    {raw}")
            elif STATUS in raw:
                problems.append(f"HER STATUS TO A STRANGER:\n    {raw}")
        for line in probes["bob"].table() + probes["eve"].table():
            print(line)
        # For the record: what of theirs reached her devices while they probed.
        for d in (laptop, phone):
            got = [f"{el.tag.split('}')[1]}:{el.get('id')}" for _, el in d.inbox[s_laptop if d is laptop else s_phone:]
                   if "\\40localhost@" in (el.get("from") or "") and el.tag != C + "presence" and el.get("type") != "result"]
            print(f"[{p.kind}] reached {d.boundjid.resource}: {' '.join(got)}")
        print(f"\n[{p.kind}] {len(probes['bob'].sent) + len(probes['eve'].sent)} IQ probes, "
              f"{len(bob.inbox)} stanzas to bob, {len(eve.inbox)} to eve")
        if problems:
            pytest.fail(f"{len(problems)} privacy/protocol problem(s) on {p.kind}:\n" + "\n".join(problems), pytrace=False)

    async def run():
        clients = []
        try:
            await scenario(clients)
        finally:
            for c in clients:
                try:
                    c.disconnect()
                    await asyncio.wait_for(c.gone.wait(), 5)
                except Exception:
                    pass

    asyncio.run(run())
