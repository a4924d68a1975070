// One XMPP user in a page, for tests/e2e/test_webrtc.py: StanzaJS (Jingle
// RTP audio over ICE-UDP, WebRTC underneath) logged in over websocket.
// Bundled by the test with esbuild into bundle.js (see call/index.html).
//
// Query: ?jid=alice@localhost&password=..&resource=laptop&ws=ws://..&turn=127.0.0.1:PORT
//
// The page subscribes to nothing by itself and approves every subscription
// request (Alice's device approves the component's linking request; Bob's
// browser approves nothing but does no harm). A callee accepts every
// incoming Jingle session with the (fake) microphone. Everything the test
// reads is on window.t:
//   t.online        the full JID once logged in and present (with caps)
//   t.presences     "from type" of every presence received
//   t.jingle        every Jingle IQ set received: {action, from, sid}
//   t.local         every ICE candidate this page gathered (parsed)
//   t.errors        error stanzas received (raw)
//   t.call(to)      caller: Jingle session-initiate to a full JID
//   t.stats()       getStats of the session's peer connection, digested
import { createClient } from "stanza";

const q = new URLSearchParams(location.search);
const turn = q.get("turn");
const t = (window.t = {
  online: null, presences: [], jingle: [], local: [], errors: [], session: null, events: [],
});
const log = (...a) => console.log(`[${q.get("jid")}]`, ...a);

const client = createClient({
  jid: q.get("jid"),
  password: q.get("password"),
  resource: q.get("resource") || "web",
  transports: { websocket: q.get("ws"), bosh: false },
  // Both browsers may use everything (host, srflx, relay): hiding Alice's
  // addresses is the component's job, not the browsers'.
  jingle: {
    iceServers: [
      { urls: `stun:${turn}` },
      { urls: `turn:${turn}?transport=udp`, username: "u", credential: "p" },
    ],
    iceTransportPolicy: "all",
  },
});
t.client = client;

// "candidate:1 1 udp 2122260223 192.0.2.2 5000 typ host [raddr X rport Y] ..."
function parseCandidate(line) {
  const f = line.replace(/^a=/, "").replace(/^candidate:/, "").split(/\s+/);
  const out = { foundation: f[0], component: f[1], protocol: f[2].toLowerCase(), ip: f[4], port: Number(f[5]) };
  for (let i = 6; i + 1 < f.length; i += 2) {
    if (f[i] === "typ") out.type = f[i + 1];
    if (f[i] === "raddr") out.relAddr = f[i + 1];
    if (f[i] === "rport") out.relPort = Number(f[i + 1]);
  }
  return out;
}

function watch(sess) {
  t.session = sess;
  sess.pc.addEventListener("icecandidate", (e) => {
    if (e.candidate && e.candidate.candidate) t.local.push(parseCandidate(e.candidate.candidate));
  });
}

client.on("raw:incoming", (xml) => {
  if (/^<(iq|message|presence)[^>]*type=["']error["']/.test(xml)) {
    t.errors.push(xml);
    log("error stanza", xml);
  }
});
client.on("presence", (p) => {
  t.presences.push(`${p.from} ${p.type || "available"}`);
  if (p.type === "subscribe") {
    log("approves subscription of", p.from);
    client.acceptSubscription(p.from);
  }
});
client.on("iq:set:jingle", (iq) => {
  t.jingle.push({ action: iq.jingle.action, from: iq.from, sid: iq.jingle.sid });
  log("jingle", iq.jingle.action, "from", iq.from);
});
for (const ev of ["outgoing", "accepted", "terminated", "ringing"]) {
  client.on(`jingle:${ev}`, (s, r) => {
    t.events.push(`${ev} ${s.sid}${r ? " " + JSON.stringify(r) : ""}`);
    log(ev, s.sid, r ? JSON.stringify(r) : "");
  });
}

const mic = () => navigator.mediaDevices.getUserMedia({ audio: true, video: false });

client.on("jingle:incoming", async (sess) => {
  log("incoming from", sess.peerID, "sid", sess.sid);
  t.events.push(`incoming ${sess.peerID}`);
  watch(sess);
  const stream = await mic();
  for (const track of stream.getTracks()) sess.addTrack(track, stream);
  sess.accept();
});

t.call = async (to) => {
  const stream = await mic();
  const sess = client.jingle.createMediaSession(to, undefined, stream);
  watch(sess);
  sess.start();
  return sess.sid;
};

t.subscribe = (jid) => client.subscribe(jid);

t.stats = async () => {
  const pc = t.session && t.session.pc;
  if (!pc) return null;
  const st = await pc.getStats();
  const out = {
    ice: pc.iceConnectionState, gathering: pc.iceGatheringState,
    inbound: 0, outbound: 0, pair: null, localCandidates: [], remoteCandidates: [],
  };
  const cand = (r) => ({ type: r.candidateType, ip: r.address, port: r.port, protocol: r.protocol,
                         relAddr: r.relatedAddress, relPort: r.relatedPort });
  st.forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "audio") out.inbound += r.bytesReceived || 0;
    if (r.type === "outbound-rtp" && r.kind === "audio") out.outbound += r.bytesSent || 0;
    if (r.type === "local-candidate") out.localCandidates.push(cand(r));
    if (r.type === "remote-candidate") out.remoteCandidates.push(cand(r));
    if (r.type === "transport" && r.selectedCandidatePairId) {
      const p = st.get(r.selectedCandidatePairId);
      out.pair = { local: cand(st.get(p.localCandidateId)), remote: cand(st.get(p.remoteCandidateId)), state: p.state };
    }
  });
  return out;
};

client.on("session:started", async () => {
  // Caps (XEP-0115) in the presence, so the component learns the device's
  // features: StanzaJS's jingle plugin advertises jingle, rtp, audio,
  // video and ice-udp in disco#info, but puts no caps in presence itself.
  client.updateCaps();
  client.sendPresence({ legacyCapabilities: client.disco.getCaps() });
  t.online = client.jid;
  log("online as", client.jid);
});
client.on("disconnected", () => { t.disconnected = true; log("disconnected"); });
client.on("auth:failed", () => { t.authFailed = true; log("auth failed"); });
client.connect();
