//! [`Secret`]: a string that never prints itself; [`SecretSource`]: where one is kept.
//!
//! Every credential the relay holds (app passwords, OAuth client secrets, refresh and access
//! tokens, listener passwords) lives in a `Secret`. Its `Debug` and `Display` print
//! `[redacted]`, so a secret cannot reach a log line or an error message by accident; the only
//! way to the bytes is [`Secret::expose`], which is called where the value goes on the wire and
//! nowhere else.
//!
//! A leaf module: the configuration holds secrets (an inline password, a path to one) as plain
//! data, and the credential code above it reads them, so neither depends on the other for this.

use std::fmt;
use std::path::{Path, PathBuf};

/// A secret value with redacted `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// Why a secret could not be read from its file.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read (missing, permissions, ...).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file that was read.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is empty (after trimming the line ending).
    #[error("{path} is empty")]
    Empty {
        /// The file that was read.
        path: String,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not UTF-8 text")]
    NotText {
        /// The file that was read.
        path: String,
    },
}

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret from a file (a systemd credential, a docker secret, a 0600 file).
    ///
    /// Trailing line endings and spaces are removed: editors and `echo` add them, and no
    /// credential the relay uses ends in whitespace.
    pub fn from_file(path: &Path) -> Result<Self, SecretFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| SecretFileError::Read {
            path: shown.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| SecretFileError::NotText {
            path: shown.clone(),
        })?;
        let value = text.trim_end();
        if value.is_empty() {
            return Err(SecretFileError::Empty { path: shown });
        }
        Ok(Secret(value.to_owned()))
    }

    /// The value itself. Call this only where the secret is put on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a secret is kept: in the configuration itself (or the environment), or in a file
/// that is read when the secret is needed (so a rotated file is picked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The value itself.
    Inline(Secret),
    /// A file holding it (a systemd credential, a docker secret, a 0600 file).
    File(PathBuf),
}

impl SecretSource {
    /// The secret: the inline value, or the file's content read now.
    pub fn load(&self) -> Result<Secret, SecretFileError> {
        match self {
            SecretSource::Inline(s) => Ok(s.clone()),
            SecretSource::File(path) => Secret::from_file(path),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2-app-password");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-app-password");
    }

    #[test]
    fn file_is_trimmed_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "abcd efgh ijkl mnop\n").unwrap();
        assert_eq!(
            Secret::from_file(&p).unwrap().expose(),
            "abcd efgh ijkl mnop"
        );

        std::fs::write(&p, "\n").unwrap();
        let e = Secret::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("pw") && e.contains("empty"), "{e}");

        let missing = dir.path().join("missing");
        let e = Secret::from_file(&missing).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
    }
}
