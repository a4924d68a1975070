//! The XEP-0114 stream to the XMPP server: connect, handshake, and a
//! stream of raw elements both ways.
//!
//! Built on tokio-xmpp's low-level `xmlstream` with `minidom::Element` as
//! the item type, so that a stanza xmpp-parsers would refuse still reaches
//! the core (which answers it with an error) instead of ending the read
//! loop, and relayed payloads keep every child.

use std::net::SocketAddr;

use futures::{SinkExt, StreamExt};
use minidom::Element;
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::net::TcpStream;
use tokio_xmpp::xmlstream::{initiate_stream, ReadError, StreamHeader, Timeouts, XmlStream};

use xmpp_parsers::component::Handshake;

use crate::core::stanza::{self, ns};
use crate::fanout::Tap;

/// RFC 6120 stream namespace (stream errors).
pub const STREAMS_NS: &str = "http://etherx.jabber.org/streams";
const STREAM_ERRORS_NS: &str = "urn:ietf:params:xml:ns:xmpp-streams";

/// The element stream to the server, over TCP (or, in tests, over
/// anything that reads and writes bytes), with a side door for stanzas
/// serialised once for many recipients ([`Tap`]).
pub type Stream<Io = TcpStream> = XmlStream<BufStream<Tap<Io>>, Element>;

/// Why connecting failed, worded for the admin who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// TCP or stream setup failed.
    #[error("cannot reach the server's component port at {addr}: {source} (is the server running, and is server.address its component_ports/component_interfaces?)")]
    Unreachable {
        /// Where we tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server refused our secret.
    #[error("the server refused {domain} (not-authorized): server.secret must equal the server's secret for it (Prosody: component_secret in its Component block; ejabberd: the password under hosts of its ejabberd_service listener, which also answers this when the domain is not among those hosts)")]
    NotAuthorized {
        /// Our domain.
        domain: String,
    },
    /// The server has no component for our domain.
    #[error("the server does not know {domain} (host-unknown): add `Component \"{domain}\"` with a component_secret to its config (Prosody), or the domain under hosts of an ejabberd_service listener (ejabberd)")]
    HostUnknown {
        /// Our domain.
        domain: String,
    },
    /// Another connection holds our domain.
    #[error("another instance is connected as {domain} (conflict): stop it, or wait until the server drops it")]
    Conflict {
        /// Our domain.
        domain: String,
    },
    /// The server accepted us, but routes part of our traffic elsewhere.
    #[error("another instance is connected as {domain}: the server (ejabberd does this) splits {domain}'s stanzas between the two connections, so only {returned} of our {sent} self-checks came back; stop the other instance, or give each instance its own domain")]
    Shared {
        /// Our domain.
        domain: String,
        /// Self-checks that came back to us.
        returned: usize,
        /// Self-checks sent.
        sent: usize,
    },
    /// Another stream error, or the stream closed.
    #[error("the server closed the stream during the handshake: {0}")]
    Closed(String),
    /// Reading or writing failed while the stream was set up.
    #[error("the stream to the server failed during setup: {0}")]
    Io(std::io::Error),
}

/// The namespace of the self-check messages [`verify_sole`] sends.
pub const SELFCHECK_NS: &str = "urn:unified-presence:selfcheck:0";

/// Self-checks sent after each handshake.
pub const SELFCHECKS: usize = 16;

/// The nonce of a self-check message, if `el` is one.
pub fn selfcheck_nonce(el: &Element) -> Option<&str> {
    el.get_child("selfcheck", SELFCHECK_NS)?.attr("nonce")
}

/// Checks that this connection alone serves `domain`. Prosody refuses a
/// second connection for a domain (`conflict`), but ejabberd accepts it
/// and balances stanzas between the connections by the sender's bare JID,
/// which would split owners' traffic between two stores. So: send
/// [`SELFCHECKS`] messages to our own domain from as many different
/// senders, and see them all come back. Stanzas that arrive meanwhile are
/// returned, for the core, in order. When none comes back within
/// `wait` (a server that does not route a component's stanzas to itself)
/// the check is skipped with a warning.
pub async fn verify_sole<Io: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut Stream<Io>,
    domain: &str,
    nonce: &str,
    wait: std::time::Duration,
) -> Result<Vec<Element>, ConnectError> {
    let lost = |e: String| ConnectError::Closed(e);
    for i in 0..SELFCHECKS {
        let from = format!("selfcheck-{i}@{domain}");
        let mut m = stanza::stanza("message", &from, domain, Some("headline"));
        stanza::set_attr(&mut m, "id", format!("selfcheck-{nonce}-{i}"));
        m.append_child(stanza::element(
            "selfcheck",
            SELFCHECK_NS,
            &[("nonce", nonce)],
        ));
        stream.feed(&m).await.map_err(|e| lost(e.to_string()))?;
    }
    SinkExt::<&Element>::flush(stream)
        .await
        .map_err(|e| lost(e.to_string()))?;
    // The server routes each check within milliseconds: once one is
    // back, a second without the rest means they went elsewhere (and so,
    // meanwhile, did users' stanzas: keep that window short).
    let mut deadline = tokio::time::Instant::now() + wait;
    let mut early = Vec::new();
    let mut returned = 0;
    while returned < SELFCHECKS {
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(item) => item,
            Err(_) => break,
        };
        match item {
            Some(Ok(el)) => match selfcheck_nonce(&el) {
                Some(n) if n == nonce => {
                    returned += 1;
                    deadline = deadline
                        .min(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
                }
                Some(_) => {
                    tracing::warn!(%domain, "a self-check of another instance connected as this domain arrived")
                }
                None if stream_error_condition(&el).is_some() => return Err(refusal(&el, domain)),
                None => early.push(el),
            },
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::ParseError(e))) => {
                tracing::warn!(error = %e, "dropped an element that failed to parse");
            }
            Some(Err(e)) => return Err(lost(e.to_string())),
            None => return Err(lost("end of stream".into())),
        }
    }
    match returned {
        SELFCHECKS => Ok(early),
        0 => {
            tracing::warn!(%domain, "no self-check came back: cannot tell whether another instance serves this domain");
            Ok(early)
        }
        returned => {
            if !early.is_empty() {
                tracing::warn!(
                    stanzas = early.len(),
                    "dropped what arrived for the domain while checking"
                );
            }
            Err(ConnectError::Shared {
                domain: domain.to_owned(),
                returned,
                sent: SELFCHECKS,
            })
        }
    }
}

/// The condition of a stream error element, if `el` is one.
pub fn stream_error_condition(el: &Element) -> Option<String> {
    if !el.is("error", STREAMS_NS) {
        return None;
    }
    Some(
        el.children()
            .find(|c| c.has_ns(STREAM_ERRORS_NS) && c.name() != "text")
            .map_or_else(|| "undefined-condition".to_owned(), |c| c.name().to_owned()),
    )
}

/// Connects and authenticates as `domain` (XEP-0114 §3).
pub async fn connect(
    addr: SocketAddr,
    domain: &str,
    secret: &str,
    timeouts: Timeouts,
) -> Result<Stream, ConnectError> {
    let unreachable = |source| ConnectError::Unreachable { addr, source };
    let tcp = TcpStream::connect(addr).await.map_err(unreachable)?;
    tcp.set_nodelay(true).map_err(unreachable)?;
    handshake(tcp, domain, secret, timeouts)
        .await
        .map_err(|e| match e {
            ConnectError::Io(source) => unreachable(source),
            other => other,
        })
}

/// Opens the component stream over `io` and authenticates as `domain`
/// (XEP-0114 §3).
pub async fn handshake<Io: AsyncRead + AsyncWrite + Unpin>(
    io: Io,
    domain: &str,
    secret: &str,
    timeouts: Timeouts,
) -> Result<Stream<Io>, ConnectError> {
    let header = StreamHeader {
        to: Some(domain.to_owned().into()),
        ..StreamHeader::default()
    };
    let mut pending = initiate_stream(
        BufStream::new(Tap::new(io)),
        ns::COMPONENT,
        header,
        timeouts,
    )
    .await
    .map_err(ConnectError::Io)?;
    let stream_id = pending.take_header().id.map(|id| id.into_owned());
    let mut stream: Stream<Io> = pending.skip_features();
    let Some(stream_id) = stream_id else {
        // Prosody answers an unknown domain with a header without id and
        // then a stream error: read it to say which.
        return Err(read_refusal(&mut stream, domain).await);
    };
    let handshake: Element = Handshake::from_stream_id_and_password(stream_id, secret).into();
    stream.send(&handshake).await.map_err(ConnectError::Io)?;
    loop {
        match stream.next().await {
            Some(Ok(el)) if el.is("handshake", ns::COMPONENT) => return Ok(stream),
            Some(Ok(el)) => return Err(refusal(&el, domain)),
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(e)) => return Err(ConnectError::Closed(e.to_string())),
            None => return Err(ConnectError::Closed("end of stream".into())),
        }
    }
}

async fn read_refusal<Io: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut Stream<Io>,
    domain: &str,
) -> ConnectError {
    match stream.next().await {
        Some(Ok(el)) => refusal(&el, domain),
        Some(Err(e)) => ConnectError::Closed(e.to_string()),
        None => ConnectError::Closed("no stream id".into()),
    }
}

fn refusal(el: &Element, domain: &str) -> ConnectError {
    let domain = domain.to_owned();
    match stream_error_condition(el).as_deref() {
        Some("not-authorized") => ConnectError::NotAuthorized { domain },
        Some("host-unknown") => ConnectError::HostUnknown { domain },
        Some("conflict") => ConnectError::Conflict { domain },
        Some(other) => ConnectError::Closed(other.to_owned()),
        None => ConnectError::Closed(format!("unexpected <{}/>", el.name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_error_conditions_are_read() {
        let el: Element = "<error xmlns='http://etherx.jabber.org/streams'><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></error>".parse().unwrap();
        assert_eq!(stream_error_condition(&el).as_deref(), Some("conflict"));
    }

    #[test]
    fn only_selfcheck_messages_carry_a_nonce() {
        let check: Element = "<message xmlns='jabber:component:accept' from='selfcheck-3@u.example' to='u.example'><selfcheck xmlns='urn:unified-presence:selfcheck:0' nonce='ab12'/></message>".parse().unwrap();
        assert_eq!(selfcheck_nonce(&check), Some("ab12"));
        let other: Element = "<message xmlns='jabber:component:accept' from='bob@example.org' to='u.example'><selfcheck xmlns='urn:example:other' nonce='ab12'/></message>".parse().unwrap();
        assert_eq!(selfcheck_nonce(&other), None);
    }
}
