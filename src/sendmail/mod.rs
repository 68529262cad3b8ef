//! The sendmail interface: `gmail-relay sendmail ...`, or the binary invoked as `sendmail`
//! (installed as `/usr/sbin/sendmail`), for the programs that send mail that way: cron, PHP
//! `mail()`, mdadm, smartd, logwatch, git send-email.
//!
//! It reads one message on standard input, works out the envelope from the command line (and
//! with `-t` from the headers), and hands the message to the running relay over SMTP on its
//! local listener. It never writes the spool itself: the relay stays its only writer, and the
//! message is acknowledged (and durable) exactly as any other. Exit codes follow sysexits(3),
//! so callers know whether to retry: 75 (`EX_TEMPFAIL`) when the relay is not running.
//!
//! Flags: recipients as arguments; `-t` (recipients from `To:`/`Cc:`/`Bcc:` as well, `Bcc:`
//! removed); `-f`/`-r` sender; `-F` full name (for an added `From:`); `-i`/`-oi` (a line with
//! only `.` does not end the message); `-C`/`--config` config file; `-bm` (the default), `-bp`
//! (list the queue, as `mailq`), `-bi` (nothing to do); `-N never` (no delivery status
//! notification whatever happens). Other traditional flags (`-oem`, `-odi`, `-B 8BITMIME`,
//! other `-N` values, `-v`, ...) are accepted and ignored.

mod message;
mod submit;

pub use message::{Defaults, Submission, prepare, read_message};
pub use submit::submit;

use std::path::PathBuf;

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Send the message on standard input (`-bm`, the default).
    Send,
    /// List the queue (`-bp`, as `mailq`).
    ListQueue,
    /// Nothing (`-bi`, rebuilding aliases: there are none).
    Nothing,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// What to do.
    pub mode: Mode,
    /// `-f`/`-r`: the envelope sender (`<>` or empty: the null sender).
    pub sender: Option<String>,
    /// `-F`: the sender's full name.
    pub full_name: Option<String>,
    /// Recipients given as arguments.
    pub recipients: Vec<String>,
    /// `-t`: take recipients from the headers too.
    pub from_headers: bool,
    /// A line with only `.` ends the message (unless `-i`/`-oi`).
    pub dot_ends: bool,
    /// `-C FILE` or `--config FILE`.
    pub config: Option<PathBuf>,
    /// `-N never`: no delivery status notification for this message.
    pub notify_never: bool,
    /// Flags accepted but ignored, for a debug note.
    pub ignored: Vec<String>,
}

/// Flags that take a value (glued, `-fuser@x`, or as the next argument, `-f user@x`).
const WITH_VALUE: &str = "frFCNRVBXhLOp";

/// Parses sendmail's command line (without the program name).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Invocation, SendmailError> {
    let mut inv = Invocation {
        mode: Mode::Send,
        sender: None,
        full_name: None,
        recipients: Vec::new(),
        from_headers: false,
        dot_ends: true,
        config: None,
        notify_never: false,
        ignored: Vec::new(),
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            inv.recipients.extend(args.by_ref());
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", path)) => inv.config = Some(path.into()),
                None if long == "config" => {
                    let path = args.next().ok_or_else(|| usage("--config needs a file"))?;
                    inv.config = Some(path.into());
                }
                _ => inv.ignored.push(arg.clone()),
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            inv.recipients.push(arg);
            continue;
        };
        // Flags without a value may be grouped (`-ti`); a flag with a value ends the group.
        for (i, flag) in flags.char_indices() {
            let rest = &flags[i + flag.len_utf8()..];
            if WITH_VALUE.contains(flag) {
                let value = if rest.is_empty() {
                    args.next()
                        .ok_or_else(|| usage(&format!("-{flag} needs a value")))?
                } else {
                    rest.to_owned()
                };
                match flag {
                    'f' | 'r' => inv.sender = Some(value),
                    'F' => inv.full_name = Some(value),
                    'C' => inv.config = Some(value.into()),
                    'N' if value.eq_ignore_ascii_case("never") => inv.notify_never = true,
                    _ => inv.ignored.push(format!("-{flag} {value}")),
                }
                break;
            }
            match flag {
                't' => inv.from_headers = true,
                'i' => inv.dot_ends = false,
                'o' => {
                    // `-oi`, `-oem`, `-odb`: an old-style option, glued.
                    if rest == "i" {
                        inv.dot_ends = false;
                    } else {
                        inv.ignored.push(format!("-o{rest}"));
                    }
                    break;
                }
                'b' => {
                    inv.mode = match rest {
                        "m" | "" => Mode::Send,
                        "p" => Mode::ListQueue,
                        "i" => Mode::Nothing,
                        other => {
                            return Err(usage(&format!(
                                "-b{other} is not supported (gmail-relay's sendmail sends mail \
                                 (-bm) and lists the queue (-bp))"
                            )));
                        }
                    };
                    break;
                }
                // Debug levels, queue runs, error modes: glued values, all ignored.
                'd' | 'q' | 'e' | 'A' => {
                    inv.ignored.push(format!("-{flag}{rest}"));
                    break;
                }
                other => inv.ignored.push(format!("-{other}")),
            }
        }
    }
    Ok(inv)
}

fn usage(message: &str) -> SendmailError {
    SendmailError::Usage(message.to_owned())
}

/// Why a message was not handed to the relay; each has its sysexits code.
#[derive(Debug, thiserror::Error)]
pub enum SendmailError {
    /// Bad command line (`EX_USAGE`, 64).
    #[error("usage: {0}")]
    Usage(String),
    /// The message cannot be sent as it is: no recipients, too big (`EX_DATAERR`, 65).
    #[error("{0}")]
    Data(String),
    /// A recipient was refused, or a local user has nowhere to go (`EX_NOUSER`, 67).
    #[error("{0}")]
    NoUser(String),
    /// The relay refused the message for good (`EX_UNAVAILABLE`, 69).
    #[error("the relay refused the message: {0}")]
    Refused(String),
    /// Standard input could not be read (`EX_IOERR`, 74).
    #[error("cannot read the message from standard input: {0}")]
    Input(std::io::Error),
    /// The relay is not running or answered "try later" (`EX_TEMPFAIL`, 75): the caller
    /// should try again.
    #[error("{0}")]
    TempFail(String),
    /// This host or sender may not use the relay (`EX_NOPERM`, 77).
    #[error("the relay does not allow this: {0}")]
    NoPerm(String),
}

impl SendmailError {
    /// The sysexits(3) code.
    pub fn exit_code(&self) -> u8 {
        match self {
            SendmailError::Usage(_) => 64,
            SendmailError::Data(_) => 65,
            SendmailError::NoUser(_) => 67,
            SendmailError::Refused(_) => 69,
            SendmailError::Input(_) => 74,
            SendmailError::TempFail(_) => 75,
            SendmailError::NoPerm(_) => 77,
        }
    }
}

/// `EX_CONFIG`: the config file is missing or invalid.
pub const EX_CONFIG: u8 = 78;

#[cfg(test)]
mod tests;
