//! Start-up recovery: clear `tmp/`, check every queued message, finish interrupted moves.
//!
//! Only the header line of each message file is read (plus its length), so recovering a large
//! queue costs one small read per message, not the whole spool.
//!
//! The moves and removals made here (finishing interrupted moves, quarantining) are made
//! durable by one fsync of `queue/` and `failed/` at the end, before the daemon accepts mail.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::format;
use super::{QueueId, QueuedMessage, Spool, SpoolError, fsio, io_err, read_state};

/// Longest header line accepted (1000 recipients of 256 bytes fit many times over).
const MAX_HEADER: u64 = 8 << 20;

#[derive(Default)]
struct Found {
    msg: bool,
    state: bool,
}

pub(super) fn recover(spool: &Spool) -> Result<Vec<QueuedMessage>, SpoolError> {
    let inner = &spool.inner;
    clear_dir(&inner.tmp)?;

    let mut found: BTreeMap<QueueId, Found> = BTreeMap::new();
    for (name, path) in list(&inner.queue)? {
        let parsed = name
            .split_once('.')
            .and_then(|(stem, ext)| Some((QueueId::parse(stem)?, ext)));
        match parsed {
            Some((id, "msg")) => found.entry(id).or_default().msg = true,
            Some((id, "state")) => found.entry(id).or_default().state = true,
            _ => tracing::warn!(
                file = %path.display(),
                "unexpected file in the queue directory; leaving it alone"
            ),
        }
    }

    let mut recovered = Vec::with_capacity(found.len());
    for (id, files) in found {
        inner.ids.observe(id);
        if !files.msg {
            finish_interrupted_move(spool, id)?;
            continue;
        }
        match check(spool, id, files.state) {
            Ok(q) => recovered.push(q),
            Err(reason) => spool.quarantine_now(
                id,
                &format!("unreadable in the queue at start-up: {reason}"),
            )?,
        }
    }
    for (name, _) in list(&inner.failed)? {
        if let Some(id) = name.split_once('.').and_then(|(s, _)| QueueId::parse(s)) {
            inner.ids.observe(id);
        }
    }
    fsio::sync_dir(&inner.queue).map_err(io_err("sync", &inner.queue))?;
    fsio::sync_dir(&inner.failed).map_err(io_err("sync", &inner.failed))?;
    Ok(recovered)
}

/// Validates one message file (header, body length) and its state; returns its schedule, or
/// the reason it cannot be sent as it is.
fn check(spool: &Spool, id: QueueId, has_state: bool) -> Result<QueuedMessage, String> {
    let path = spool.msg_path(&spool.inner.queue, id);
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file
        .metadata()
        .map_err(|e| format!("cannot stat: {e}"))?
        .len();
    let mut line = Vec::new();
    BufReader::new(file)
        .take(MAX_HEADER)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read: {e}"))?;
    let (envelope, size, start) = format::decode_header(&line).map_err(|e| e.to_string())?;
    format::check_size(size, len - start as u64).map_err(|e| e.to_string())?;
    let state = if has_state {
        let state_path = spool.state_path(&spool.inner.queue, id);
        read_state(&state_path).map_err(|e| e.to_string())?
    } else {
        None
    };
    let (next_attempt, pending, held, account) = match &state {
        Some(s) => (
            s.next_attempt,
            s.pending().count(),
            s.held,
            s.account(&envelope).to_owned(),
        ),
        None => (
            envelope.received_at,
            envelope.recipients.len(),
            false,
            envelope
                .account
                .clone()
                .unwrap_or_else(|| crate::config::DEFAULT_ACCOUNT.to_owned()),
        ),
    };
    Ok(QueuedMessage {
        id,
        received_at: envelope.received_at,
        next_attempt,
        pending,
        held,
        account,
        sender: envelope.sender.clone(),
    })
}

/// A state file without its message: the message was removed (delivered) or moved to
/// `failed/` and the crash came before the state followed it.
fn finish_interrupted_move(spool: &Spool, id: QueueId) -> Result<(), SpoolError> {
    let state = spool.state_path(&spool.inner.queue, id);
    if spool.msg_path(&spool.inner.failed, id).exists() {
        let dest = spool.state_path(&spool.inner.failed, id);
        std::fs::rename(&state, &dest).map_err(io_err("move to failed/", &state))
    } else {
        fsio::remove_if_exists(&state).map_err(io_err("remove", &state))
    }
}

fn list(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, SpoolError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path()));
    }
    Ok(out)
}

fn clear_dir(dir: &Path) -> Result<(), SpoolError> {
    for (_, path) in list(dir)? {
        fsio::remove_if_exists(&path).map_err(io_err("remove", &path))?;
    }
    Ok(())
}
