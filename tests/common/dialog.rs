//! SMTP dialog transcripts: a file of client lines and expected replies, run against a relay.
//!
//! ```text
//! # a comment
//! > EHLO client            a client line (CRLF is added)
//! >> bare\nLF              raw bytes: \r \n \t \\ are escapes, nothing is added
//! < 250 2.1.0              the next reply's last line must start with this
//! <close                   the server must close the connection
//! ```
//!
//! Consecutive client lines are sent in one write when the next `<` comes, so a block of `>`
//! lines before a block of `<` lines is a pipelined batch.

use std::net::SocketAddr;
use std::path::Path;

use super::Client;

/// Runs the transcript `name` (in `tests/dialogs/`) against `addr`.
pub async fn run(addr: SocketAddr, name: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/dialogs")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut client = Client::connect(addr).await;
    let mut pending: Vec<u8> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{name}:{}", n + 1);
        if let Some(raw) = line.strip_prefix(">> ") {
            pending.extend_from_slice(&unescape(raw));
        } else if let Some(cmd) =
            line.strip_prefix("> ")
                .or(if line == ">" { Some("") } else { None })
        {
            pending.extend_from_slice(cmd.as_bytes());
            pending.extend_from_slice(b"\r\n");
        } else if line == "<close" {
            flush(&mut client, &mut pending).await;
            let got = client.reply().await;
            assert_eq!(
                got, "",
                "{at}: expected the connection to close, got {got:?}"
            );
        } else if let Some(want) = line.strip_prefix("< ") {
            flush(&mut client, &mut pending).await;
            let got = client.reply().await;
            assert!(
                got.starts_with(want),
                "{at}: expected a reply starting {want:?}, got {got:?}"
            );
        } else {
            assert!(
                line.is_empty() || line.starts_with('#'),
                "{at}: cannot read {line:?}"
            );
        }
    }
    flush(&mut client, &mut pending).await;
}

async fn flush(client: &mut Client, pending: &mut Vec<u8>) {
    if !pending.is_empty() {
        client.send(pending).await;
        pending.clear();
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('r') => out.push(b'\r'),
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('\\') => out.push(b'\\'),
            other => panic!("unknown escape \\{other:?} in {s:?}"),
        }
    }
    out
}
