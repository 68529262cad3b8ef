//! The daemon's end of the control socket.
//!
//! The daemon holds the spool lock, so a socket file left by a daemon that died is stale and is
//! replaced. Each connection is served by its own task (queue commands are rare and short); a
//! connection silent for a minute is closed. On shutdown the listener stops and the socket file
//! is removed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ControlError, Envelope, ErrorKind, MAX_REQUEST, Operator, Request, socket_path};

/// How long a control connection may stay silent.
const IDLE: Duration = Duration::from_secs(60);

/// The control socket could not be created.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot create the control socket {}: {source}{}",
    path.display(),
    if path.as_os_str().len() > 100 { " (the path is too long for a UNIX socket: use a shorter queue.dir)" } else { "" }
)]
pub struct BindError {
    /// The socket path.
    pub path: PathBuf,
    /// The error.
    pub source: std::io::Error,
}

/// Creates the control socket in the spool directory `dir` (whose lock the caller holds).
pub fn bind(dir: &Path) -> Result<UnixListener, BindError> {
    let path = socket_path(dir);
    let err = |source| BindError {
        path: path.clone(),
        source,
    };
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves queue requests until `stop` fires; connection tasks join `tracker`.
pub async fn serve(
    listener: UnixListener,
    operator: Operator,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf));
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let operator = operator.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = connection(stream, &operator) => if let Err(e) = r {
                    tracing::debug!(error = %e, "control connection ended");
                },
            }
        });
    }
    drop(listener);
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
}

async fn connection(stream: UnixStream, operator: &Operator) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(
            IDLE,
            (&mut read)
                .take(MAX_REQUEST as u64 + 1)
                .read_until(b'\n', &mut line),
        )
        .await
        .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_REQUEST {
            Envelope::Error(ControlError::new(ErrorKind::Invalid, "request too long"))
        } else {
            match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    tracing::debug!(?request, "control request");
                    match operator.handle(request).await {
                        Ok(reply) => Envelope::Ok(reply),
                        Err(e) => Envelope::Error(e),
                    }
                }
                Err(e) => Envelope::Error(ControlError::new(
                    ErrorKind::Invalid,
                    format!(
                        "bad request ({e}); is the queue command from another version of gmail-relay?"
                    ),
                )),
            }
        };
        let mut out = serde_json::to_vec(&reply).expect("replies serialise");
        out.push(b'\n');
        write.write_all(&out).await?;
        if line.len() > MAX_REQUEST {
            return Ok(());
        }
    }
}
