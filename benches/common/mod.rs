//! What the benches share: reading an XMPP stream by its top-level
//! elements, the device features and their XEP-0115 ver, and /proc
//! figures of a process.

#![allow(dead_code)] // each bench uses a part

use std::collections::HashMap;
use std::time::Instant;

use base64::Engine as _;
use sha1::{Digest, Sha1};
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

pub(crate) const NODE: &str = "https://client.bench.example";
/// Audio and video capable devices: chat, audio and video classes.
pub(crate) const FEATURES: &[&str] = &[
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#info",
    "urn:xmpp:jingle-message:0",
    "urn:xmpp:jingle:1",
    "urn:xmpp:jingle:apps:rtp:1",
    "urn:xmpp:jingle:apps:rtp:audio",
    "urn:xmpp:jingle:apps:rtp:video",
    "urn:xmpp:jingle:transports:ice-udp:1",
];

/// `--name N` pairs from the command line; anything else (cargo bench
/// adds `--bench`) is skipped.
pub(crate) fn numeric_flags() -> HashMap<String, usize> {
    let mut flags = HashMap::new();
    let mut it = std::env::args().skip(1).peekable();
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            continue;
        };
        if let Some(v) = it.peek().and_then(|v| v.parse().ok()) {
            flags.insert(name.to_owned(), v);
            it.next();
        }
    }
    flags
}

/// The XEP-0115 ver of a client with [`FEATURES`] (identity client/pc).
pub(crate) fn ver() -> String {
    ver_of(FEATURES)
}

/// The XEP-0115 ver of a client with `features`.
pub(crate) fn ver_of(features: &[&str]) -> String {
    let mut s = String::from("client/pc//bench<");
    let mut f: Vec<&str> = features.to_vec();
    f.sort();
    for x in f {
        s.push_str(x);
        s.push('<');
    }
    base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()))
}

/// A disco#info result answering `query` (an IQ get to a device) with
/// `features`, echoing its node.
pub(crate) fn disco_reply(query: &Out, features: &[&str], ns: &str) -> String {
    let id = query.id.as_deref().unwrap_or_default();
    let node = query
        .node
        .as_deref()
        .map(|n| format!(" node='{n}'"))
        .unwrap_or_default();
    let mut feats = String::new();
    for f in features {
        feats.push_str(&format!("<feature var='{f}'/>"));
    }
    format!(
        "<iq xmlns='{ns}' type='result' id='{id}' from='{}' to='{}'><query xmlns='http://jabber.org/protocol/disco#info'{node}><identity category='client' type='pc' name='bench'/>{feats}</query></iq>",
        query.to, query.from
    )
}

// ---- reading a stream -------------------------------------

/// One top-level element the component sent, reduced to what we check.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) at: Instant,
    pub(crate) name: String,
    pub(crate) to: String,
    pub(crate) typ: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) from: String,
    /// `<status>` text, for presences.
    pub(crate) status: Option<String>,
    /// The `node` of a disco#info query, for IQs that ask one.
    pub(crate) node: Option<String>,
    /// An IQ get with a disco#info query.
    pub(crate) disco_get: bool,
}

pub(crate) fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(" {name}=");
    let start = tag.find(&key)? + key.len();
    let quote = tag[start..].chars().next()?;
    let rest = &tag[start + 1..];
    let end = rest.find(quote)?;
    Some(&rest[..end])
}

pub(crate) fn summarise(el: &str, at: Instant) -> Out {
    let head_end = el.find('>').unwrap_or(el.len());
    let head = &el[..head_end];
    let name = head[1..]
        .split(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .next()
        .unwrap_or("")
        .to_owned();
    let status = el.find("<status>").and_then(|s| {
        let rest = &el[s + 8..];
        rest.find("</status>").map(|e| rest[..e].to_owned())
    });
    let disco_get = name == "iq"
        && attr(head, "type") == Some("get")
        && el.contains("http://jabber.org/protocol/disco#info");
    let node = el
        .find("<query ")
        .and_then(|q| el[q..].find('>').map(|e| &el[q..q + e]))
        .and_then(|q| attr(q, "node"))
        .map(str::to_owned);
    Out {
        at,
        node,
        disco_get,
        to: attr(head, "to").unwrap_or("").to_owned(),
        from: attr(head, "from").unwrap_or("").to_owned(),
        typ: attr(head, "type").map(str::to_owned),
        id: attr(head, "id").map(str::to_owned),
        name,
        status,
    }
}

/// [`read_loop`] on a thread and runtime of its own, so that what the
/// caller's thread does never delays reading (and the time stamps).
pub(crate) fn read_on_own_thread(sock: std::net::TcpStream, tx: mpsc::UnboundedSender<Out>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("reader runtime");
        rt.block_on(async move {
            // The whole stream, not a split half: dropping a write half
            // would shut the socket down for the caller's writes.
            let sock = tokio::net::TcpStream::from_std(sock).expect("reader socket");
            read_loop(sock, tx).await;
        });
    });
}

/// Splits the byte stream into top-level elements (depth 1 below the
/// stream root) by counting tags; enough for what minidom writes.
pub(crate) async fn read_loop(
    mut rd: impl tokio::io::AsyncRead + Unpin,
    tx: mpsc::UnboundedSender<Out>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 1 << 16];
    let mut depth = 0usize;
    let mut scanned = 0usize;
    let mut el_start = 0usize;
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        buf.extend_from_slice(&chunk[..n]);
        let mut i = scanned;
        let mut consumed = 0usize;
        while i < buf.len() {
            if buf[i] != b'<' {
                i += 1;
                continue;
            }
            let Some(rel) = buf[i..].iter().position(|&b| b == b'>') else {
                break;
            };
            let end = i + rel;
            let closing = buf.get(i + 1) == Some(&b'/');
            let decl = buf.get(i + 1) == Some(&b'?');
            let self_closing = buf[end - 1] == b'/';
            if decl {
            } else if closing {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    emit(&buf[el_start..=end], at, &tx);
                    consumed = end + 1;
                }
            } else {
                if depth == 1 {
                    el_start = i;
                }
                if self_closing {
                    if depth == 1 {
                        emit(&buf[el_start..=end], at, &tx);
                        consumed = end + 1;
                    }
                } else {
                    if buf[i..end].starts_with(b"<stream:stream") {
                        // A (re)started stream (RFC 6120 §4.3.3, after SASL).
                        depth = 0;
                    }
                    depth += 1;
                    if depth == 1 {
                        // The stream header.
                        consumed = end + 1;
                        let _ = tx.send(summarise("<stream:header>", at));
                    }
                }
            }
            i = end + 1;
        }
        if depth <= 1 && consumed > 0 {
            buf.drain(..consumed);
            el_start = el_start.saturating_sub(consumed);
            i -= consumed;
        }
        scanned = i;
    }
}

pub(crate) fn emit(bytes: &[u8], at: Instant, tx: &mpsc::UnboundedSender<Out>) {
    let text = String::from_utf8_lossy(bytes);
    let _ = tx.send(summarise(&text, at));
}

pub(crate) struct Rss {
    pub(crate) rss_kib: u64,
    pub(crate) hwm_kib: u64,
}

pub(crate) fn rss(pid: u32) -> Rss {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Rss {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

pub(crate) fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of the calling thread so far.
#[allow(dead_code)] // the component bench's floor; not every bench.
pub(crate) fn thread_cpu_secs() -> f64 {
    stat_cpu_secs("/proc/thread-self/stat")
}

fn stat_cpu_secs(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let after = text.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime are fields 14 and 15 (1-based); here after pid and comm.
    (t(11) + t(12)) / 100.0
}

pub(crate) struct Table(pub Vec<(String, String)>);

impl Table {
    pub(crate) fn put(&mut self, k: &str, v: impl std::fmt::Display) {
        eprintln!("  {k} = {v}");
        self.0.push((k.to_owned(), v.to_string()));
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The component checks after its handshake that it alone serves its
/// domain (`connection::verify_sole`): a server routes each self-check
/// message back to it. The generator plays that server.
#[allow(dead_code)]
pub(crate) fn selfcheck_echo(out: &Out) -> Option<String> {
    let nonce = out
        .id
        .as_deref()?
        .strip_prefix("selfcheck-")?
        .rsplit_once('-')?
        .0;
    (out.name == "message").then(|| {
        format!(
            "<message xmlns='jabber:component:accept' type='headline' from='{}' to='{}'><selfcheck xmlns='urn:unified-presence:selfcheck:0' nonce='{nonce}'/></message>",
            out.from, out.to
        )
    })
}
