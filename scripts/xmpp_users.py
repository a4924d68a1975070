"""slixmpp users for unified-presence's tests and demo: each records every
stanza it receives, raw, so that callers can assert on exactly what a
user's client saw."""
import asyncio
import copy
import time

import slixmpp
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


class Client(slixmpp.ClientXMPP):
    """A user's device: records every stanza it receives, raw."""

    def __init__(self, jid, features=(), caps=True, caps_node="https://client.example/app", password=None):
        super().__init__(jid, password or "pw-" + jid.split("@")[0])
        self.enable_starttls = False
        self.enable_direct_tls = False
        self.enable_plaintext = True
        self.disco_features = list(features)
        self.caps = caps
        self.register_plugin("feature_mechanisms")
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        if caps:
            self.register_plugin("xep_0115", {"caps_node": caps_node})
        self.auto_authorize = None
        self.auto_subscribe = False
        self.inbox = []
        self._arrived = asyncio.Event()
        self.started = asyncio.Event()
        self.gone = asyncio.Event()
        self.add_event_handler("session_start", lambda _: self.started.set())
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_filter("in", self._record)
        # Jingle IQs are answered by the caller of this class (tests ack or
        # refuse them on purpose); without a handler slixmpp would answer
        # every one with an error first.
        self.register_handler(Callback("jingle", MatchXPath("{jabber:client}iq/{urn:xmpp:jingle:1}jingle"), lambda _: None))

    def _record(self, stanza):
        self.inbox.append((str(stanza), copy.deepcopy(stanza.xml)))
        self._arrived.set()
        return stanza

    async def online(self, port, show=None, status=None, priority=0):
        self.connect("127.0.0.1", port)
        await asyncio.wait_for(self.started.wait(), 15)
        for f in self.disco_features:
            await self.plugin["xep_0030"].add_feature(f)
        if self.caps:
            await self.plugin["xep_0115"].update_caps(broadcast=False)
        # RFC 6121 §3.1.3: subscription requests go to interested resources.
        await self.get_roster()
        self.send_presence(pshow=show, pstatus=status, ppriority=priority)
        return self

    async def offline(self):
        self.disconnect()
        await asyncio.wait_for(self.gone.wait(), 10)

    def mark(self):
        return len(self.inbox)

    def received(self, pred, since=0):
        return [el for _, el in self.inbox[since:] if pred(el)]

    async def wait_for(self, pred, since=0, timeout=10, what="stanza"):
        deadline = time.monotonic() + timeout
        while True:
            found = self.received(pred, since)
            if found:
                return found[0]
            # No await between the check and clear(): nothing can arrive
            # unseen in between (one event loop).
            self._arrived.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                pass
        raw = "\n".join(s for s, _ in self.inbox[since:])
        raise AssertionError(f"{self.boundjid} never received {what}; got:\n{raw}")

    def raw_since(self, since=0):
        return [s for s, _ in self.inbox[since:]]
