//! One stanza to many recipients, serialised once.
//!
//! A class presence goes to every watcher of a view: the same stanza but
//! for `to` ([`Transmit::Each`]). tokio-xmpp's `XmlStream` serialises every
//! element it is given, event by event, and has no way to write bytes of
//! one's own, so serialising that stanza once needs a door of our own:
//! [`Tap`] sits under the stream's buffer, around the socket, and writes
//! bytes the runtime serialised itself ahead of anything the stream writes
//! after them. [`send_all`] keeps the order of the core's queue: it
//! flushes the stream before it puts bytes through the door.
//!
//! Written here because tokio-xmpp 6 lacks it; the stream is still
//! tokio-xmpp's for everything else (reading, the handshake, errors).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{ready, Context, Poll};

use futures::SinkExt;
use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connection::Stream;
use crate::core::{Core, Transmit};
use crate::http::Metrics;

/// The socket under the XML stream, with a side door: bytes pushed
/// through [`Tap::push_each`] are written before anything written to the
/// tap after them.
#[derive(Debug)]
pub struct Tap<Io> {
    io: Io,
    /// A lock only for the type system: the runtime pushes through a
    /// shared reference (all `XmlStream` lends), and the writing side
    /// holds `&mut self`, which needs no lock.
    side: Mutex<Side>,
}

/// The side door's buffer is kept up to this size between writes.
const KEEP: usize = 64 * 1024;

#[derive(Debug, Default)]
struct Side {
    buf: Vec<u8>,
    /// How much of `buf` is written.
    start: usize,
}

impl<Io> Tap<Io> {
    /// `io`, with nothing waiting at the side door.
    pub fn new(io: Io) -> Tap<Io> {
        Tap {
            io,
            side: Mutex::new(Side::default()),
        }
    }

    /// The socket.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }

    /// Serialises `stanza` (which has no `to`) once and queues a copy of it
    /// to each of `to`. False when the stanza does not serialise as
    /// expected; then nothing was queued, and the caller sends the copies
    /// the usual way. Only call this with the stream flushed (see
    /// [`send_all`]): these bytes go out before anything written after.
    pub fn push_each(&self, stanza: &Element, to: &VecDeque<String>) -> bool {
        let mut side = self.side.lock().unwrap_or_else(PoisonError::into_inner);
        render_each(stanza, to, &mut side.buf)
    }

    fn poll_side(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        Io: AsyncWrite + Unpin,
    {
        let side = self.side.get_mut().unwrap_or_else(PoisonError::into_inner);
        while side.start < side.buf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &side.buf[side.start..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            side.start += n;
        }
        side.buf.clear();
        side.start = 0;
        // A large publish leaves a large buffer: not kept for good.
        if side.buf.capacity() > KEEP {
            side.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Tap<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Tap<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_side(cx))?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_side(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_side(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Appends `stanza` (without `to`) once per recipient, `to` first. The
/// stanza is serialised once, as a document of its own: it declares its
/// namespace (`xmlns='jabber:component:accept'`, the stream's default, so
/// the same stanza). False, with nothing appended, if the text does not
/// start with `<name` as it must, or if it declares a namespace prefix.
pub fn render_each(stanza: &Element, to: &VecDeque<String>, out: &mut Vec<u8>) -> bool {
    // minidom asserts on prefixes it cannot declare; a stanza carrying
    // prefixed content from a peer (`xmlns:ex='...'`) takes the stream's
    // own path. A default namespace (`xmlns='...'`) is no prefix.
    fn unprefixed(el: &Element) -> bool {
        el.prefixes.declared_prefixes().keys().all(Option::is_none) && el.children().all(unprefixed)
    }
    if !unprefixed(stanza) {
        return false;
    }
    let mut body = Vec::with_capacity(512);
    if stanza.write_to(&mut body).is_err() {
        return false;
    }
    let name = stanza.name().as_bytes();
    let Some(rest) = body.strip_prefix(b"<").and_then(|b| b.strip_prefix(name)) else {
        return false;
    };
    if !matches!(rest.first(), Some(b' ' | b'>' | b'/')) {
        return false;
    }
    out.reserve(to.len() * (rest.len() + name.len() + 64));
    for t in to {
        out.push(b'<');
        out.extend_from_slice(name);
        out.extend_from_slice(b" to='");
        escape_attr(t, out);
        out.push(b'\'');
        out.extend_from_slice(rest);
    }
    true
}

/// XML attribute text (single-quoted). A JID cannot hold most of these,
/// but `to` is text we did not parse here.
fn escape_attr(s: &str, out: &mut Vec<u8>) {
    for b in s.bytes() {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'\'' => out.extend_from_slice(b"&apos;"),
            b'"' => out.extend_from_slice(b"&quot;"),
            _ => out.push(b),
        }
    }
}

/// Writes everything the core queued, in order, in as few writes as the
/// stream allows: single stanzas through the stream, a stanza for many
/// recipients serialised once through the [`Tap`].
pub async fn send_all<Io: AsyncRead + AsyncWrite + Unpin>(
    core: &mut Core,
    stream: &mut Stream<Io>,
    metrics: &Metrics,
) -> Result<(), String> {
    let mut sent = false;
    // Whether the stream holds stanzas not yet written through the tap.
    let mut fed = false;
    while let Some(t) = core.poll_transmit_group() {
        sent = true;
        match t {
            Transmit::One(el) => {
                metrics.sent(&el);
                stream.feed(&el).await.map_err(|e| e.to_string())?;
                fed = true;
            }
            Transmit::Each { stanza, to } => {
                metrics.sent_each(&stanza, to.len());
                if fed {
                    SinkExt::<&Element>::flush(stream)
                        .await
                        .map_err(|e| e.to_string())?;
                    fed = false;
                }
                if !stream.get_stream().get_ref().push_each(&stanza, &to) {
                    tracing::debug!(
                        name = stanza.name(),
                        "stanza for many serialised one by one"
                    );
                    for el in (Transmit::Each { stanza, to }).into_stanzas() {
                        stream.feed(&el).await.map_err(|e| e.to_string())?;
                    }
                    fed = true;
                }
            }
        }
    }
    if sent {
        SinkExt::<&Element>::flush(stream)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence() -> Element {
        "<presence xmlns='jabber:component:accept' from='alice@unified.localhost/chat'>\
         <show>away</show><status>At lunch &amp; back at 2 &lt;ish&gt;</status>\
         <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://up' ver='x='/></presence>"
            .parse()
            .expect("xml")
    }

    /// Each rendered stanza is what the one-by-one path sends: the same
    /// element with its own `to`, and only that.
    #[test]
    fn each_copy_is_the_stanza_with_its_own_to() {
        let to: VecDeque<String> = ["bob@localhost", "o'brien@example.org", "carol@localhost"]
            .map(String::from)
            .into();
        let mut out = Vec::new();
        assert!(render_each(&presence(), &to, &mut out));
        let text = String::from_utf8(out).expect("utf-8");
        // Parse the copies back as children of one stream-like root.
        let root: Element = format!("<stream xmlns='jabber:component:accept'>{text}</stream>")
            .parse()
            .expect("the rendered stanzas are well-formed XML");
        let got: Vec<&Element> = root.children().collect();
        let want: Vec<Element> = Transmit::Each {
            stanza: presence(),
            to: to.clone(),
        }
        .into_stanzas()
        .collect();
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(*g, w);
        }
        assert_eq!(got[1].attr("to"), Some("o'brien@example.org"));
    }

    /// A stanza whose content declares namespace prefixes is left to the
    /// stream's own writer.
    #[test]
    fn prefixed_content_is_not_rendered_here() {
        let child = Element::builder("item", "urn:example")
            .prefix(Some("ex".into()), "urn:example")
            .expect("prefix")
            .build();
        let stanza = Element::builder("message", "jabber:component:accept")
            .append(child)
            .build();
        let mut out = Vec::new();
        assert!(!render_each(&stanza, &["x@y".to_owned()].into(), &mut out));
        assert!(out.is_empty());
    }

    /// Bytes through the side door keep their place between the stream's
    /// own writes.
    #[tokio::test]
    async fn the_side_door_keeps_the_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut tap = Tap::new(ours);
        tap.write_all(b"<a/>").await.expect("write");
        tap.flush().await.expect("flush");
        let to: VecDeque<String> = ["x@y".to_owned()].into();
        let p: Element = "<p xmlns='jabber:component:accept'/>".parse().expect("xml");
        assert!(tap.push_each(&p, &to));
        tap.write_all(b"<b/>").await.expect("write");
        tap.shutdown().await.expect("shutdown");
        let mut got = String::new();
        theirs.read_to_string(&mut got).await.expect("read");
        assert_eq!(got, "<a/><p to='x@y' xmlns='jabber:component:accept'/><b/>");
    }
}
