//! The component's SOCKS5 streamhost (XEP-0065 §6, a mediated
//! connection): where the two ends of a file transfer through a virtual
//! JID meet, each knowing only us.
//!
//! The core decides who may come (see `core::calls::s5b`): for each end
//! of a bridge it hands over the `DST.ADDR` hashes that end may ask for.
//! A connection asking for one of them gets the SOCKS5 success reply at
//! once (Conversations gives up after 3 s) and waits; when the other end
//! of its bridge arrives, the two are spliced and bytes flow both ways
//! until either side closes. A connection asking for anything else is
//! refused. Nobody authenticates to a SOCKS5 streamhost: the hash, known
//! only to the two ends and us, is the ticket, and it is used once.
//!
//! Written here because no maintained crate offers a SOCKS5 *server* that
//! lets the caller decide per `DST.ADDR` and pair connections; the
//! protocol part is the few bytes of RFC 1928 that XEP-0065 uses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::core::StreamhostOp;

/// How long a connection may take to say what it wants.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a connected end waits for the other.
const WAIT: Duration = Duration::from_secs(120);
/// How long a hash the core handed over stays valid.
const TICKET: Duration = Duration::from_secs(600);
/// Connections in their handshake at once; more are closed.
const HANDSHAKING: usize = 128;
/// Of those, from one address (one IPv6 /64) at once; more are closed.
/// A transfer needs one connection per end, so a few per address cover
/// several transfers at once behind one NAT, and one address holding its
/// connections open cannot keep everyone else waiting.
const HANDSHAKING_PER_ADDRESS: usize = 8;

/// The streamhost's state, shared by the accept loop and the runtime.
#[derive(Debug, Default)]
pub struct Streamhost {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Hash -> (bridge, the end's first hash, when the core handed it
    /// over). An end may ask by any of its hashes, once.
    tickets: HashMap<String, (u64, String, Instant)>,
    /// An end that connected, waiting for the other end of its bridge.
    waiting: HashMap<u64, (TcpStream, Instant)>,
}

impl State {
    fn expire(&mut self, now: Instant) {
        self.tickets
            .retain(|_, (_, _, at)| now.duration_since(*at) < TICKET);
        self.waiting
            .retain(|_, (_, at)| now.duration_since(*at) < WAIT);
    }
}

impl Streamhost {
    /// What the core asked for.
    pub fn apply(&self, op: StreamhostOp) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let now = Instant::now();
        state.expire(now);
        match op {
            StreamhostOp::Expect { bridge, hashes } => {
                let Some(end) = hashes.first().cloned() else {
                    return;
                };
                for h in hashes {
                    state.tickets.insert(h, (bridge, end.clone(), now));
                }
            }
            StreamhostOp::Forget { bridge } => {
                state.tickets.retain(|_, (b, _, _)| *b != bridge);
                state.waiting.remove(&bridge);
            }
        }
    }

    /// The bridge `hash` is a ticket for, used up with every other hash
    /// of the same end: one connection per end.
    fn take_ticket(&self, hash: &str) -> Option<u64> {
        let mut state = self.state.lock().ok()?;
        state.expire(Instant::now());
        let (bridge, end, _) = state.tickets.remove(hash)?;
        state
            .tickets
            .retain(|_, (b, e, _)| !(*b == bridge && *e == end));
        Some(bridge)
    }

    /// `stream` (one end of `bridge`) is in: spliced with the other end
    /// if it waits, else it waits.
    async fn arrived(self: Arc<Self>, bridge: u64, stream: TcpStream) {
        let other = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            match state.waiting.remove(&bridge) {
                Some((other, _)) => other,
                None => {
                    state.waiting.insert(bridge, (stream, Instant::now()));
                    return;
                }
            }
        };
        let (mut a, mut b) = (other, stream);
        match tokio::io::copy_bidirectional(&mut a, &mut b).await {
            Ok((ab, ba)) => info!(bridge, bytes = ab + ba, "bytestream done"),
            Err(e) => debug!(bridge, error = %e, "bytestream ended"),
        }
    }
}

/// Listens on `addr`; connections are served by tasks of their own.
/// With the address it listens on (its port, when `addr`'s was 0).
pub async fn listen(addr: SocketAddr) -> std::io::Result<(Arc<Streamhost>, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    info!(%addr, "SOCKS5 streamhost listening");
    let host = Arc::new(Streamhost::default());
    let shared = host.clone();
    let permits = Arc::new(Semaphore::new(HANDSHAKING));
    let per_address = Arc::new(PerAddress::default());
    tokio::spawn(async move {
        loop {
            let (socket, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "streamhost accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = per_address.enter(peer.ip()) else {
                debug!(%peer, "streamhost: too many handshakes from this address, connection closed");
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                debug!(%peer, "streamhost busy: connection closed");
                continue;
            };
            let host = shared.clone();
            tokio::spawn(async move {
                let mut socket = socket;
                let asked = tokio::time::timeout(HANDSHAKE, handshake(&mut socket, &host)).await;
                drop(permit);
                drop(slot);
                match asked {
                    Ok(Ok(bridge)) => host.arrived(bridge, socket).await,
                    Ok(Err(e)) => debug!(%peer, error = %e, "SOCKS5 connection refused"),
                    Err(_) => debug!(%peer, "SOCKS5 handshake too slow"),
                }
            });
        }
    });
    Ok((host, addr))
}

/// Handshakes under way per address, so one address cannot take all of
/// [`HANDSHAKING`].
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

/// One handshake counted against its address until dropped.
struct AddressSlot {
    of: Arc<PerAddress>,
    key: IpAddr,
}

impl PerAddress {
    /// A slot for a connection from `ip`, if that address has fewer than
    /// [`HANDSHAKING_PER_ADDRESS`] handshakes under way. An IPv6 address
    /// counts by its /64, what one host or one home is given.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !u128::from(u64::MAX);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
            v4 => v4,
        };
        let mut counts = self.0.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= HANDSHAKING_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            of: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let Ok(mut counts) = self.of.0.lock() else {
            return;
        };
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// RFC 1928 as XEP-0065 §6.3 uses it: no authentication, then CONNECT to
/// a "domain name" that is the 40-character hash and port 0. Answers
/// and returns the bridge when the hash is a ticket.
async fn handshake(s: &mut TcpStream, host: &Streamhost) -> std::io::Result<u64> {
    let refuse = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != 5 {
        return Err(refuse("not SOCKS5"));
    }
    let mut methods = vec![0u8; usize::from(head[1])];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&0) {
        s.write_all(&[5, 0xff]).await?;
        return Err(refuse("no acceptable method"));
    }
    s.write_all(&[5, 0]).await?;
    let mut req = [0u8; 5];
    s.read_exact(&mut req).await?;
    // VER, CMD (1 = CONNECT), RSV, ATYP (3 = domain name), its length.
    if req[0] != 5 || req[1] != 1 || req[3] != 3 {
        s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Err(refuse("not a CONNECT to a domain name"));
    }
    let mut addr = vec![0u8; usize::from(req[4])];
    s.read_exact(&mut addr).await?;
    let mut port = [0u8; 2];
    s.read_exact(&mut port).await?;
    let hash = String::from_utf8_lossy(&addr).to_ascii_lowercase();
    // The reply names what was asked for (XEP-0065 §6.3.3).
    let mut reply = vec![5, 0, 0, 3, req[4]];
    reply.extend_from_slice(&addr);
    reply.extend_from_slice(&[0, 0]);
    match host.take_ticket(&hash) {
        Some(bridge) => {
            s.write_all(&reply).await?;
            Ok(bridge)
        }
        None => {
            // 2: connection not allowed by ruleset.
            reply[1] = 2;
            s.write_all(&reply).await?;
            Err(refuse("unknown DST.ADDR"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connect(addr: SocketAddr, hash: &str) -> std::io::Result<(TcpStream, u8)> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&[5, 1, 0]).await?;
        let mut choice = [0u8; 2];
        s.read_exact(&mut choice).await?;
        assert_eq!(choice, [5, 0]);
        let mut req = vec![5, 1, 0, 3, hash.len() as u8];
        req.extend_from_slice(hash.as_bytes());
        req.extend_from_slice(&[0, 0]);
        s.write_all(&req).await?;
        let mut reply = vec![0u8; 5 + hash.len() + 2];
        s.read_exact(&mut reply).await?;
        Ok((s, reply[1]))
    }

    /// Two ends with the tickets the core handed over meet and exchange
    /// bytes both ways; a third asking for a used or unknown hash is
    /// refused (reply code 2).
    #[tokio::test]
    async fn two_ends_with_tickets_are_spliced_and_others_refused() {
        let (host, addr) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (ha, hb) = ("a".repeat(40), "b".repeat(40));
        host.apply(StreamhostOp::Expect {
            bridge: 1,
            hashes: vec![ha.clone(), "e".repeat(40)],
        });
        host.apply(StreamhostOp::Expect {
            bridge: 1,
            hashes: vec![hb.clone()],
        });
        let (mut a, code) = connect(addr, &ha).await.unwrap();
        assert_eq!(code, 0);
        let (mut b, code) = connect(addr, &hb).await.unwrap();
        assert_eq!(code, 0);
        a.write_all(b"hello from a").await.unwrap();
        let mut got = [0u8; 12];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello from a");
        b.write_all(b"and b").await.unwrap();
        let mut got = [0u8; 5];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"and b");
        // A ticket is used once, and so is every other hash of its end.
        let (_, code) = connect(addr, &ha).await.unwrap();
        assert_eq!(code, 2);
        let (_, code) = connect(addr, &"e".repeat(40)).await.unwrap();
        assert_eq!(code, 2);
        let (_, code) = connect(addr, &"c".repeat(40)).await.unwrap();
        assert_eq!(code, 2);
        // One end closing ends the other's stream.
        drop(a);
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    /// One address holding connections open in their handshake gets no
    /// more than its share; another address is still served, and so is
    /// the first once one of its connections is gone.
    #[tokio::test]
    async fn one_address_cannot_hold_every_handshake() {
        use tokio::net::TcpSocket;
        let (host, addr) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let from = |ip: &str| {
            let ip: IpAddr = ip.parse().unwrap();
            async move {
                let s = TcpSocket::new_v4()?;
                s.bind(SocketAddr::new(ip, 0))?;
                s.connect(addr).await
            }
        };
        // Connections that never speak, all from 127.0.0.2.
        let mut idle = Vec::new();
        for _ in 0..HANDSHAKING_PER_ADDRESS {
            idle.push(from("127.0.0.2").await.unwrap());
        }
        // One more from there is closed unanswered. The accept loop takes
        // connections in order, so the idle ones were counted first.
        let mut extra = from("127.0.0.2").await.unwrap();
        let mut buf = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let _ = extra.write_all(&[5, 1, 0]).await;
            matches!(extra.read(&mut buf).await, Ok(0) | Err(_))
        })
        .await;
        assert_eq!(
            closed,
            Ok(true),
            "a ninth handshake from one address is closed"
        );
        // Someone else meanwhile is served as usual.
        let h = "f".repeat(40);
        host.apply(StreamhostOp::Expect {
            bridge: 3,
            hashes: vec![h.clone()],
        });
        let (_, code) = connect(addr, &h).await.unwrap();
        assert_eq!(code, 0);
        // When one idle connection goes, 127.0.0.2 gets a turn again.
        drop(idle.pop());
        let h = "9".repeat(40);
        host.apply(StreamhostOp::Expect {
            bridge: 4,
            hashes: vec![h.clone()],
        });
        let served = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut s = from("127.0.0.2").await.unwrap();
                let mut choice = [0u8; 2];
                if s.write_all(&[5, 1, 0]).await.is_ok() && s.read_exact(&mut choice).await.is_ok()
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            served.is_ok(),
            "127.0.0.2 is served again after one of its connections closed"
        );
    }

    /// IPv6 addresses count by their /64, IPv4-mapped ones as IPv4.
    #[test]
    fn addresses_are_counted_by_host() {
        let per = Arc::new(PerAddress::default());
        let mut held = Vec::new();
        for i in 0..HANDSHAKING_PER_ADDRESS {
            let ip: IpAddr = format!("2001:db8::{:x}", i + 1).parse().unwrap();
            held.push(per.enter(ip).unwrap());
        }
        assert!(per.enter("2001:db8::ffff:1".parse().unwrap()).is_none());
        assert!(per.enter("2001:db8:0:1::1".parse().unwrap()).is_some());
        for _ in 0..HANDSHAKING_PER_ADDRESS {
            held.push(per.enter("::ffff:192.0.2.1".parse().unwrap()).unwrap());
        }
        assert!(per.enter("192.0.2.1".parse().unwrap()).is_none());
        held.clear();
        assert!(
            per.0.lock().unwrap().is_empty(),
            "released slots leave no entry"
        );
    }

    /// A bridge the core forgot takes nobody.
    #[tokio::test]
    async fn a_forgotten_bridge_refuses() {
        let (host, addr) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let h = "d".repeat(40);
        host.apply(StreamhostOp::Expect {
            bridge: 9,
            hashes: vec![h.clone()],
        });
        host.apply(StreamhostOp::Forget { bridge: 9 });
        let (_, code) = connect(addr, &h).await.unwrap();
        assert_eq!(code, 2);
    }
}
