//! Accept loops: admit or refuse each client, bound the number of connections (in total and
//! per client address), spawn sessions.
//!
//! A client over a limit gets `421 4.7.0` at once and is disconnected, rather than being left
//! waiting in the kernel's accept queue.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio_rustls::TlsAcceptor;

use super::connection::{self, Shared};
use super::reply::{self, Reply};
use super::session::{Peer, Session};
use super::tls::ClientStream;
use crate::config::ListenerKind;
use crate::observe::events;

/// Connections per client address, bounded by `listen.max_connections_per_client`.
pub struct PerClient {
    max: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's share of [`PerClient`]; given back when dropped.
pub struct ClientSlot {
    owner: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    /// At most `max` connections per address.
    pub fn new(max: usize) -> Arc<PerClient> {
        Arc::new(PerClient {
            max,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `ip`, unless it already has `max` connections.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let mut counts = self.counts.lock().expect("per-client lock");
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().expect("per-client lock");
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// One listening socket and how it speaks.
pub struct Endpoint {
    /// The socket.
    pub listener: TcpListener,
    /// Plain (with or without STARTTLS) or implicit TLS.
    pub kind: ListenerKind,
}

/// Accepts on `endpoint` until `cancel` fires. Each admitted client runs in its own task on
/// `tracker`, holding one permit of `limit` for its lifetime.
pub async fn accept_loop(
    endpoint: Endpoint,
    intake: super::Intake,
    limit: Arc<Semaphore>,
    per_client: Arc<PerClient>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let Endpoint { listener, kind } = endpoint;
    let implicit = kind == ListenerKind::ImplicitTls;
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = cancel.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(listener = ?local, error = %e, "accept failed; pausing 100ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // The settings in force now (a reload changes them for later connections only).
        let shared = intake.snapshot();
        let tls = shared.tls.clone();
        // On an implicit-TLS port a plain-text refusal would be garbage to the client, so it
        // is simply disconnected.
        let refusal = |reply: Reply| (!implicit).then_some(reply);
        // Outside allowed_networks, a client may still come in to authenticate, if it can do
        // so without sending a password in clear.
        let settings = &shared.settings;
        let can_authenticate = !settings.users.is_empty()
            && auth_possible(kind, tls.is_some(), settings.plaintext_auth, peer.ip());
        let needs_auth = match shared.settings.policy.client(peer.ip()) {
            Ok(()) => false,
            Err(_) if can_authenticate => true,
            Err(rejection) => {
                events::client_refused(peer, "not in listen.allowed_networks");
                tracker.spawn(refuse(stream, refusal(rejection.into())));
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            events::client_refused(peer, "listen.max_connections reached");
            tracker.spawn(refuse(stream, refusal(reply::too_many_connections())));
            continue;
        };
        let Some(slot) = per_client.try_acquire(peer.ip().to_canonical()) else {
            events::client_refused(peer, "listen.max_connections_per_client reached");
            tracker.spawn(refuse(stream, refusal(reply::too_many_connections())));
            continue;
        };
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permits = (permit, slot);
            session(stream, peer, kind, tls, needs_auth, &shared, &cancel).await;
        });
    }
}

async fn session(
    tcp: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    tls: Option<TlsAcceptor>,
    needs_auth: bool,
    shared: &Shared,
    cancel: &CancellationToken,
) {
    tracing::debug!(client = %peer, needs_auth, "connect");
    let (mut stream, encrypted, can_starttls) = match (kind, tls) {
        (ListenerKind::ImplicitTls, Some(acceptor)) => {
            match tokio::time::timeout(shared.idle_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => (ClientStream::tls(tls), true, false),
                Ok(Err(e)) => {
                    tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            }
        }
        (ListenerKind::Plain { starttls: true }, Some(acceptor)) => {
            (ClientStream::plain(tcp, Some(acceptor)), false, true)
        }
        _ => (ClientStream::plain(tcp, None), false, false),
    };
    let session = Session::new(
        shared.settings.clone(),
        Peer {
            ip: peer.ip(),
            tls: encrypted,
            can_starttls,
            needs_auth,
        },
    );
    connection::serve(&mut stream, session, shared, cancel).await;
    tracing::debug!(client = %peer, "disconnect");
}

/// Can a client on this listener authenticate without sending its password in clear over a
/// network? Yes over TLS (implicit, or STARTTLS when offered), from loopback, or when the
/// operator allows plaintext AUTH.
fn auth_possible(kind: ListenerKind, has_cert: bool, plaintext_ok: bool, ip: IpAddr) -> bool {
    let tls = match kind {
        ListenerKind::ImplicitTls => true,
        ListenerKind::Plain { starttls } => starttls && has_cert,
    };
    tls || plaintext_ok || ip.to_canonical().is_loopback()
}

/// Sends one reply (if any) and closes, without reading anything from the client.
async fn refuse(mut stream: TcpStream, reply: Option<Reply>) {
    let mut out = Vec::new();
    if let Some(reply) = reply {
        reply.write_to(&mut out);
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_is_possible_only_without_a_password_in_clear() {
        let lan: IpAddr = "192.168.1.7".parse().unwrap();
        let lo: IpAddr = "::1".parse().unwrap();
        let plain = ListenerKind::Plain { starttls: false };
        let starttls = ListenerKind::Plain { starttls: true };
        let table = [
            (plain, true, false, lan, false),
            (plain, true, true, lan, true),
            (plain, false, false, lo, true),
            (starttls, true, false, lan, true),
            (starttls, false, false, lan, false),
            (ListenerKind::ImplicitTls, true, false, lan, true),
        ];
        for (kind, cert, plaintext_ok, ip, want) in table {
            assert_eq!(
                auth_possible(kind, cert, plaintext_ok, ip),
                want,
                "{kind:?} {cert} {plaintext_ok} {ip}"
            );
        }
    }

    #[test]
    fn per_client_slots_are_counted_and_given_back() {
        let pc = PerClient::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = pc.try_acquire(a).unwrap();
        let _s2 = pc.try_acquire(a).unwrap();
        assert!(pc.try_acquire(a).is_none(), "third from the same address");
        assert!(
            pc.try_acquire(b).is_some(),
            "other addresses are not affected"
        );
        drop(s1);
        assert!(
            pc.try_acquire(a).is_some(),
            "a slot comes back when a connection ends"
        );
    }
}
