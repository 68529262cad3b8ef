//! Group commit: the rename into `queue/` and the directory fsync, shared by every message
//! that is ready at the same moment.
//!
//! Each session writes and fsyncs its own temp file (in parallel, on the blocking pool; the
//! filesystem journal merges concurrent fsyncs), then hands the file to the one committer
//! thread. The committer takes everything waiting, renames each file into the queue, fsyncs
//! the queue directory once, and only then answers each session. While one directory fsync runs,
//! the next batch queues up behind it, so under load one fsync covers many messages, and with a
//! single client it costs what it would anyway.
//!
//! Invariant: a session is told "committed" only after its file's data and its directory entry
//! are both durable. If the directory fsync fails, the batch's files are removed again and every
//! session in it is told the commit failed (the client gets a 4xx and retries), so nothing is
//! delivered that was not acknowledged.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::fsio;

/// Largest batch; bounds the time the first message of a batch waits for the last.
const MAX_BATCH: usize = 512;

/// One file to move into the queue.
pub(super) struct Request {
    pub tmp: PathBuf,
    pub dest: PathBuf,
    pub done: oneshot::Sender<io::Result<()>>,
}

/// Handle to the committer thread; the thread ends when every handle is dropped.
#[derive(Clone)]
pub(super) struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer thread for `queue_dir`.
    pub fn start(queue_dir: PathBuf) -> io::Result<Committer> {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || run(&queue_dir, &rx))?;
        Ok(Committer { tx })
    }

    /// Renames `tmp` to `dest` and makes it durable; resolves once both are on disk.
    pub async fn commit(&self, tmp: PathBuf, dest: PathBuf) -> io::Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request { tmp, dest, done })
            .map_err(|_| io::Error::other("spool committer has stopped"))?;
        wait.await
            .unwrap_or_else(|_| Err(io::Error::other("spool committer has stopped")))
    }
}

fn run(queue_dir: &std::path::Path, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let renamed: Vec<io::Result<()>> = batch
            .iter()
            .map(|r| {
                std::fs::rename(&r.tmp, &r.dest).inspect_err(|_| {
                    let _ = std::fs::remove_file(&r.tmp);
                })
            })
            .collect();
        let synced = fsio::sync_dir(queue_dir);
        for (req, result) in batch.into_iter().zip(renamed) {
            let result = match (&synced, result) {
                (Ok(()), r) => r,
                (Err(e), Ok(())) => {
                    // Not durable, so not acknowledged: take it back out of the queue.
                    let _ = std::fs::remove_file(&req.dest);
                    Err(io::Error::new(
                        e.kind(),
                        format!("fsync of queue directory: {e}"),
                    ))
                }
                (Err(_), Err(e)) => Err(e),
            };
            let _ = req.done.send(result);
        }
    }
}
