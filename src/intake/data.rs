//! The DATA reader: a sans-IO state machine that turns the bytes after `354` into the message.
//!
//! - Lines ending in CRLF are kept as they are; lines ending in a bare LF are stored with CRLF.
//!   A bare CR inside a line is content and is kept.
//! - A leading dot is removed from lines that start with one (RFC 5321 §4.5.2).
//! - The message ends **only** at CRLF `.` CRLF: the line before the dot must have ended in
//!   CRLF and so must the dot line. `\n.\n`, `\n.\r\n`, `\r\n.\n` and `\r.\r` do not end it, so
//!   an SMTP smuggling payload stays inside the one message it was sent in. A lone dot that did
//!   not end the message is kept as a `.` line.
//! - At most `max` bytes of message are kept. Past that the reader keeps scanning for the end
//!   (so the conversation stays in step) but stores nothing more: memory stays bounded whatever
//!   the client sends, and the message is refused with 552.

/// Result of feeding bytes to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All input consumed; the message continues.
    More,
    /// The end-of-data line was found; this many input bytes were consumed (the rest belongs
    /// to the next command).
    Done(usize),
}

/// Reads one message's DATA.
#[derive(Debug)]
pub struct DataReader {
    body: Vec<u8>,
    max: usize,
    overflow: bool,
    /// The next byte starts a line.
    line_start: bool,
    /// The previous line ended with CRLF (true at the start: the DATA line did).
    prev_crlf: bool,
    /// The current line so far is a single dot (held back until we know what it is).
    dot_only: bool,
    /// A CR was seen and not yet written (it may be the start of CRLF).
    cr: bool,
}

impl DataReader {
    /// A reader that keeps at most `max` message bytes.
    pub fn new(max: usize) -> Self {
        DataReader {
            body: Vec::new(),
            max,
            overflow: false,
            line_start: true,
            prev_crlf: true,
            dot_only: false,
            cr: false,
        }
    }

    /// Feeds input. Returns [`Progress::Done`] with the number of bytes consumed once the end
    /// of data has been seen.
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            i += 1;
            if self.line_start {
                self.line_start = false;
                if b == b'.' {
                    self.dot_only = true;
                    continue;
                }
            }
            if self.cr {
                self.cr = false;
                if b == b'\n' {
                    if self.dot_only && self.prev_crlf {
                        return Progress::Done(i);
                    }
                    self.end_line(true);
                    continue;
                }
                self.text(b"\r");
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => self.end_line(false),
                _ => {
                    // Fast path: copy up to the next CR or LF in one go.
                    let run = memchr::memchr2(b'\r', b'\n', &input[i..]).unwrap_or(input.len() - i);
                    self.text(&input[i - 1..i + run]);
                    i += run;
                }
            }
        }
        Progress::More
    }

    /// Bytes of content on the current line: a held-back dot turns out to be stuffing.
    fn text(&mut self, bytes: &[u8]) {
        self.dot_only = false;
        self.push(bytes);
    }

    fn end_line(&mut self, crlf: bool) {
        if self.dot_only {
            // A lone dot that does not end the message (bare LF somewhere): keep it as text.
            self.push(b".");
            self.dot_only = false;
        }
        self.push(b"\r\n");
        self.prev_crlf = crlf;
        self.line_start = true;
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.overflow {
            return;
        }
        if self.body.len() + bytes.len() > self.max {
            self.overflow = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(bytes);
    }

    /// The message, or `None` if it was larger than the limit.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.overflow).then_some(self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes; returns the body and the unconsumed rest.
    fn read(input: &[u8], max: usize, chunk: usize) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
        let mut r = DataReader::new(max);
        let mut pos = 0;
        while pos < input.len() {
            let end = (pos + chunk).min(input.len());
            if let Progress::Done(n) = r.feed(&input[pos..end]) {
                return Some((r.finish(), input[pos + n..].to_vec()));
            }
            pos = end;
        }
        None
    }

    fn body(input: &str) -> String {
        for chunk in [1, 2, 3, 7, 4096] {
            let got = read(input.as_bytes(), 1 << 20, chunk).expect("message ends");
            let first = String::from_utf8(got.0.unwrap()).unwrap();
            if chunk == 4096 {
                return first;
            }
            let whole = read(input.as_bytes(), 1 << 20, 4096).unwrap();
            assert_eq!(
                first.as_bytes(),
                whole.0.unwrap().as_slice(),
                "chunk {chunk}"
            );
        }
        unreachable!()
    }

    #[test]
    fn plain_message() {
        assert_eq!(
            body("Subject: x\r\n\r\nhello\r\n.\r\n"),
            "Subject: x\r\n\r\nhello\r\n"
        );
    }

    #[test]
    fn empty_message() {
        assert_eq!(body(".\r\n"), "");
    }

    #[test]
    fn dot_stuffing_is_removed() {
        assert_eq!(
            body("..leading\r\n...two\r\n.\r\n"),
            ".leading\r\n..two\r\n"
        );
    }

    #[test]
    fn bare_lf_lines_are_stored_with_crlf() {
        assert_eq!(body("a\nb\r\nc\n\r\n.\r\n"), "a\r\nb\r\nc\r\n\r\n");
    }

    #[test]
    fn bare_cr_is_content() {
        assert_eq!(body("a\rb\r\n.\r\n"), "a\rb\r\n");
    }

    #[test]
    fn smuggling_payloads_do_not_end_the_message() {
        for sep in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r"] {
            let input = format!(
                "Subject: one\r\n\r\nbody{sep}MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\n"
            );
            let b = body(&input);
            assert!(b.contains("MAIL FROM:<evil@x>"), "{sep:?}: {b:?}");
            assert!(b.ends_with("smuggled\r\n"), "{sep:?}: {b:?}");
        }
    }

    #[test]
    fn rest_after_the_end_is_not_consumed() {
        let (b, rest) = read(b"x\r\n.\r\nQUIT\r\n", 100, 4096).unwrap();
        assert_eq!(b.unwrap(), b"x\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn exact_limit_is_accepted_and_one_more_byte_refused() {
        let msg = "x".repeat(8) + "\r\n"; // 10 bytes stored
        let input = format!("{msg}.\r\n");
        assert_eq!(read(input.as_bytes(), 10, 3).unwrap().0.unwrap().len(), 10);
        assert_eq!(read(input.as_bytes(), 9, 3).unwrap().0, None);
    }

    #[test]
    fn oversized_input_is_not_kept() {
        let mut r = DataReader::new(1000);
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..100 {
            assert_eq!(r.feed(&chunk), Progress::More);
        }
        assert!(r.body.capacity() <= 1024, "memory stays bounded");
        assert_eq!(r.feed(b"\r\n.\r\n"), Progress::Done(5));
        assert_eq!(r.finish(), None);
    }

    #[test]
    fn incomplete_input_never_ends() {
        assert!(read(b"abc\r\n.", 100, 1).is_none());
        assert!(read(b"abc\r\n.\r", 100, 1).is_none());
    }
}
