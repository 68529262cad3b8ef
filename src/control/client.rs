//! The queue command's end: ask the running relay over its control socket, or, when none
//! answers, take the spool lock and carry the request out here.

use std::io::ErrorKind as Io;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{ControlError, Envelope, ErrorKind, MAX_LINE, Operator, Reply, Request, socket_path};
use crate::spool::{Spool, SpoolError};

/// A reply, and who gave it.
#[derive(Debug)]
pub struct Answer {
    /// The reply.
    pub reply: Reply,
    /// The running relay answered (otherwise the spool was worked on directly).
    pub running: bool,
}

/// Carries out `request` on the spool in `dir`: through the running relay when there is one.
pub async fn request(dir: &Path, request: Request) -> Result<Answer, ControlError> {
    let path = socket_path(dir);
    match UnixStream::connect(&path).await {
        Ok(stream) => ask(stream, &request)
            .await
            .map(|reply| Answer {
                reply,
                running: true,
            })
            .map_err(|e| match e {
                Asked::Refused(e) => e,
                Asked::Io(e) => ControlError::failed(format!(
                    "the relay's control socket {} failed mid-request: {e}",
                    path.display()
                )),
            }),
        Err(e) if matches!(e.kind(), Io::NotFound | Io::ConnectionRefused) => {
            offline(dir, request, &e).await
        }
        Err(e) if e.kind() == Io::PermissionDenied => Err(ControlError::failed(format!(
            "cannot use the relay's control socket {}: {e}; run the command as the relay's \
             user (e.g. sudo -u gmail-relay) or as root",
            path.display()
        ))),
        Err(e) => Err(ControlError::failed(format!(
            "cannot connect to the relay's control socket {}: {e}",
            path.display()
        ))),
    }
}

/// Asks the running relay only: never touches the spool when none answers (for health
/// checks, which must not take the spool lock from a relay that is starting).
pub async fn request_running(dir: &Path, request: Request) -> Result<Reply, ControlError> {
    let path = socket_path(dir);
    let stream = UnixStream::connect(&path).await.map_err(|e| {
        ControlError::failed(format!(
            "the relay is not running (its control socket {}: {e})",
            path.display()
        ))
    })?;
    ask(stream, &request).await.map_err(|e| match e {
        Asked::Refused(e) => e,
        Asked::Io(e) => ControlError::failed(format!(
            "the relay's control socket {} failed mid-request: {e}",
            path.display()
        )),
    })
}

enum Asked {
    Refused(ControlError),
    Io(std::io::Error),
}

async fn ask(stream: UnixStream, request: &Request) -> Result<Reply, Asked> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    write.write_all(&line).await.map_err(Asked::Io)?;
    line.clear();
    BufReader::new(read)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(Asked::Io)?;
    if line.is_empty() {
        return Err(Asked::Io(std::io::Error::new(
            Io::UnexpectedEof,
            "the relay closed the connection without answering",
        )));
    }
    match serde_json::from_slice::<Envelope>(&line) {
        Ok(Envelope::Ok(reply)) => Ok(reply),
        Ok(Envelope::Error(e)) => Err(Asked::Refused(e)),
        Err(e) => Err(Asked::Io(std::io::Error::new(
            Io::InvalidData,
            format!("unreadable answer ({e}); is the relay another version of gmail-relay?"),
        ))),
    }
}

/// No relay answers: work on the spool directly, holding its lock.
async fn offline(
    dir: &Path,
    request: Request,
    connect_error: &std::io::Error,
) -> Result<Answer, ControlError> {
    if !dir.join("queue").is_dir() {
        return Err(ControlError::new(
            ErrorKind::Failed,
            format!(
                "no spool at {} (queue.dir): the relay has not run with this configuration yet",
                dir.display()
            ),
        ));
    }
    let owned = dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || Spool::open(&owned))
        .await
        .expect("spool open does not panic")
        .map_err(|e| match e {
            SpoolError::Locked { pid, .. } => ControlError::failed(format!(
                "the relay{} holds the spool {} but its control socket {} does not answer \
                 ({connect_error}); is it still starting up?",
                pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                dir.display(),
                socket_path(dir).display()
            )),
            e => ControlError::failed(e),
        })?;
    let reply = Operator::offline(opened.spool).handle(request).await?;
    Ok(Answer {
        reply,
        running: false,
    })
}
