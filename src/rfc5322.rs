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

/// The value of a header field (the bytes after the colon), unfolded and trimmed, as text
/// (lossy UTF-8).
pub fn field_value(field: &[u8]) -> String {
    let value = match memchr::memchr(b':', field) {
        Some(colon) => &field[colon + 1..],
        None => field,
    };
    let text = String::from_utf8_lossy(value);
    text.split("\r\n")
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

/// The addresses of an address-list field value (`To:`, `Cc:`, `Bcc:`, `From:`):
/// `a@x, "Doe, J" <j@x>, Team: b@x, c@x;, d@x (comment)` gives `a@x`, `j@x`, `b@x`, `c@x`,
/// `d@x`. Display names, comments and group names are dropped; an element without `@` (a
/// local user name such as `root`) is returned as it is.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut plain = String::new(); // the element outside quotes, comments and brackets
    let mut angle: Option<String> = None;
    let (mut quoted, mut escaped, mut depth, mut in_angle) = (false, false, 0u32, false);
    // An element without angle brackets that still has spaces is not one address (e.g. a bare
    // display name in a malformed field): its last word is where the address is.
    let mut finish = |plain: &mut String, angle: &mut Option<String>| {
        let address = match angle.take() {
            Some(a) => a.trim().to_owned(),
            None => plain
                .split_whitespace()
                .last()
                .unwrap_or_default()
                .to_owned(),
        };
        if !address.is_empty() {
            out.push(address);
        }
        plain.clear();
    };
    for c in value.chars() {
        if escaped {
            escaped = false;
            if in_angle {
                angle.get_or_insert_default().push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => escaped = true,
            '"' if depth == 0 => {
                quoted = !quoted;
                if in_angle {
                    angle.get_or_insert_default().push(c);
                }
            }
            _ if quoted => {
                if in_angle {
                    angle.get_or_insert_default().push(c);
                }
            }
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' if in_angle => in_angle = false,
            _ if in_angle => angle.get_or_insert_default().push(c),
            // A group's name: what came before is not an address.
            ':' => plain.clear(),
            ',' | ';' => finish(&mut plain, &mut angle),
            c if c.is_whitespace() => {
                if !plain.is_empty() && !plain.ends_with(' ') {
                    plain.push(' ');
                }
            }
            c => plain.push(c),
        }
    }
    finish(&mut plain, &mut angle);
    out
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

    #[test]
    fn address_lists_as_mail_programs_write_them() {
        let cases: &[(&str, &[&str])] = &[
            ("a@x", &["a@x"]),
            ("a@x, b@y", &["a@x", "b@y"]),
            ("\"Doe, John\" <j@x>, Mary <m@y>", &["j@x", "m@y"]),
            ("d@x (Dee, D)", &["d@x"]),
            ("Team: b@x, c@x;, e@x", &["b@x", "c@x", "e@x"]),
            ("undisclosed-recipients:;", &[]),
            ("root", &["root"]),
            ("<\"odd user\"@x>", &["\"odd user\"@x"]),
            ("  ", &[]),
            ("=?UTF-8?B?w4lsb2R5?= <e@x>", &["e@x"]),
        ];
        for (value, want) in cases {
            assert_eq!(addresses(value), *want, "{value}");
        }
    }

    #[test]
    fn values_are_unfolded() {
        assert_eq!(field_value(b"To: a@x,\r\n\tb@y\r\n"), "a@x, b@y");
    }
}
