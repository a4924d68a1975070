"""slixmpp users that speak OMEMO as Conversations, Dino and Gajim do
(`eu.siacs.conversations.axolotl`), with slixmpp-omemo, a real
implementation: keys in memory, blind trust before verification (what
those clients do until the user verifies a fingerprint)."""
import asyncio

from omemo.storage import Just, Nothing, Storage
from slixmpp import JID
from slixmpp.plugins import register_plugin
from slixmpp.xmlstream.handler import CoroutineCallback
from slixmpp.xmlstream.matcher import MatchXPath
from slixmpp_omemo import XEP_0384

from harness import Client

AXOLOTL = "eu.siacs.conversations.axolotl"


class _Memory(Storage):
    def __init__(self):
        super().__init__()
        self.data = {}

    async def _load(self, key):
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key, value):
        self.data[key] = value

    async def _delete(self, key):
        self.data.pop(key, None)


class _Omemo(XEP_0384):
    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self):
        self._memory = _Memory()
        super().plugin_init()

    @property
    def storage(self):
        return self._memory

    @property
    def _btbv_enabled(self):
        return True

    async def _devices_blindly_trusted(self, blindly_trusted, identifier):
        pass

    async def _prompt_manual_trust(self, manually_trusted, identifier):
        pass


register_plugin(_Omemo, name="xep_0384")


class OmemoClient(Client):
    """A device with OMEMO: publishes its keys on its own account when it
    connects, encrypts with `send_encrypted`, and decrypts every encrypted
    message it receives into `plain` (text, sender's bare JID)."""

    def __init__(self, jid, *features, **kw):
        super().__init__(jid, *features, **kw)
        for p in ("xep_0004", "xep_0060", "xep_0163", "xep_0280", "xep_0334", "xep_0380"):
            self.register_plugin(p)
        self.register_plugin("xep_0384")
        self.omemo_ready = asyncio.Event()
        self.add_event_handler("omemo_initialized", lambda *_: self.omemo_ready.set())
        self.plain = asyncio.Queue()
        self.failures = []
        # Every encrypted message, also the empty ones that complete a key
        # exchange (slixmpp's "message" event only sees those with a body).
        self.register_handler(CoroutineCallback(
            "omemo-in", MatchXPath("{jabber:client}message/{%s}encrypted" % AXOLOTL), self._decrypt))

    async def online(self, port, **kw):
        await super().online(port, **kw)
        await asyncio.wait_for(self.omemo_ready.wait(), 30)
        return self

    async def _decrypt(self, msg):
        try:
            plain, device = await self.plugin["xep_0384"].decrypt_message(msg)
        except Exception as e:  # noqa: BLE001 - recorded for the test to show
            self.failures.append(repr(e))
            return
        if plain["body"]:
            await self.plain.put((plain["body"], device.bare_jid, device.device_id))

    async def send_encrypted(self, to, text):
        msg = self.make_message(mto=JID(to), mbody=text, mtype="chat")
        enc, errors = await self.plugin["xep_0384"].encrypt_message(msg, JID(to))
        assert not errors, errors
        assert enc.xml.find("{%s}encrypted" % AXOLOTL) is not None
        enc.send()
        return enc

    async def device_id(self):
        sm = await self.plugin["xep_0384"].get_session_manager()
        return (await sm.get_own_device_information())[0].device_id

    async def device_ids_of(self, jid, refresh=False):
        """The device ids this client knows for `jid`."""
        if refresh:
            await self.plugin["xep_0384"].refresh_device_lists({JID(jid)}, force_download=True)
        sm = await self.plugin["xep_0384"].get_session_manager()
        return {d.device_id for d in await sm.get_device_information(JID(jid).bare)}
