//! Accept loops: admit or refuse each client, bound the number of connections, spawn sessions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::{self, Shared};
use super::reply::{self, Reply};
use super::session::Session;

/// Accepts on `listener` until `cancel` fires. Each admitted client runs in its own task on
/// `tracker`, holding one permit of `limit` for its lifetime.
pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
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
        if let Err(rejection) = shared.settings.policy.client(peer.ip()) {
            tracing::warn!(client = %peer, "client rejected: not in listen.allowed_networks");
            tracker.spawn(refuse(stream, rejection.into()));
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(client = %peer, "connection refused: listen.max_connections reached");
            tracker.spawn(refuse(stream, reply::too_many_connections()));
            continue;
        };
        let shared = shared.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _permit = permit;
            session(stream, peer, &shared, &cancel).await;
        });
    }
}

async fn session(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    cancel: &CancellationToken,
) {
    tracing::debug!(client = %peer, "connect");
    let session = Session::new(shared.settings.clone(), peer.ip());
    connection::serve(&mut stream, session, shared, cancel).await;
    tracing::debug!(client = %peer, "disconnect");
}

/// Sends one reply and closes, without reading anything from the client.
async fn refuse(mut stream: TcpStream, reply: Reply) {
    let mut out = Vec::new();
    reply.write_to(&mut out);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.write_all(&out).await?;
        stream.shutdown().await
    })
    .await;
}
