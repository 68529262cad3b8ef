//! Internet Message Format (RFC 5322) helpers shared by everything that reads or writes
//! message headers: the intake's header hygiene, the bounce generator, the Gmail rewrites.
//!
//! Messages are byte slices with CRLF line endings (the intake guarantees that). The header
//! section is everything before the first empty line; a message without one is all header.

use std::ops::Range;
use std::time::SystemTime;

/// A date in RFC 5322 form, e.g. `Mon, 23 Nov 2026 13:35:50 +0000`.
pub fn date(t: SystemTime) -> String {
    let http = httpdate::fmt_http_date(t);
    // IMF-fixdate is RFC 5322 syntax with the obsolete zone "GMT"; write the numeric zone.
    match http.strip_suffix(" GMT") {
        Some(rest) => format!("{rest} +0000"),
        None => http,
    }
}

/// Where the header section ends: after the CRLF of its last field (the empty line that
/// follows separates the body).
pub fn header_end(message: &[u8]) -> usize {
    if message.starts_with(b"\r\n") {
        return 0;
    }
    memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |p| p + 2)
}

/// The header fields of `message`: for each, its byte range (folded lines included, CRLF
/// included) and its name (empty for a line without a colon).
pub fn fields(message: &[u8]) -> Vec<(Range<usize>, &[u8])> {
    let end = header_end(message);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < end {
        let next = field_end(message, pos, end);
        out.push((pos..next, field_name(&message[pos..next])));
        pos = next;
    }
    out
}

/// The end of the field starting at `start`: after its last line, folded lines included.
fn field_end(message: &[u8], start: usize, end: usize) -> usize {
    let mut pos = start;
    loop {
        pos = memchr::memmem::find(&message[pos..end], b"\r\n").map_or(end, |p| pos + p + 2);
        if pos >= end || !matches!(message[pos], b' ' | b'\t') {
            return pos;
        }
    }
}

/// The name of a header field (before the colon), trimmed; empty if the line has no colon.
fn field_name(field: &[u8]) -> &[u8] {
    match memchr::memchr(b':', field) {
        Some(colon) => field[..colon].trim_ascii(),
        None => &[],
    }
}

/// Text made safe for one header line: control characters (line breaks included) become `?`.
pub fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_folding_and_the_body_left_out() {
        let m = b"A: 1\r\nB: 2,\r\n 3\r\nno colon\r\n\r\nC: body\r\n";
        let f: Vec<(&[u8], &[u8])> = fields(m).into_iter().map(|(r, n)| (&m[r], n)).collect();
        assert_eq!(
            f,
            [
                (&b"A: 1\r\n"[..], &b"A"[..]),
                (b"B: 2,\r\n 3\r\n", b"B"),
                (b"no colon\r\n", b""),
            ]
        );
        assert_eq!(header_end(b"\r\nbody"), 0);
        assert_eq!(header_end(b"A: 1\r\n"), 6);
    }

    #[test]
    fn dates_use_a_numeric_zone() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        assert_eq!(date(t), "Wed, 18 Nov 2026 11:06:40 +0000");
    }
}
