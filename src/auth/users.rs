//! Listener users: who may authenticate to the relay's own SMTP listener (AUTH PLAIN/LOGIN).
//!
//! Only password hashes are kept: argon2 (PHC strings, `$argon2id$...`, what
//! `gmail-relay hash-password` prints) or bcrypt (`$2b$`/`$2y$`, what `htpasswd -B` writes).
//! Verifying costs tens of milliseconds of CPU on purpose, so callers run [`Users::verify`] on a
//! blocking thread. An unknown user name costs the same as a wrong password, so the time of a
//! reply does not tell which names exist.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

/// The listener's users (name → password hash).
#[derive(Clone, Default)]
pub struct Users {
    by_name: HashMap<String, Hash>,
    /// A hash of nothing in particular, checked for unknown names to spend the same time;
    /// made on first use.
    decoy: OnceLock<String>,
}

#[derive(Clone)]
enum Hash {
    Argon2(String),
    Bcrypt(String),
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.by_name.keys().collect();
        names.sort();
        f.debug_struct("Users")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Parses `name:hash` entries; `Err` says what is wrong with the entry at that index.
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Users, (usize, String)> {
        let mut by_name = HashMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let (name, hash) = entry
                .split_once(':')
                .ok_or_else(|| (i, "is not name:hash".to_owned()))?;
            let name = name.trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err((i, format!("has an invalid user name {name:?}")));
            }
            let hash = parse_hash(hash.trim()).map_err(|e| (i, format!("user {name}: {e}")))?;
            if by_name.insert(name.to_owned(), hash).is_some() {
                return Err((i, format!("repeats user {name}")));
            }
        }
        Ok(Users {
            by_name,
            decoy: OnceLock::new(),
        })
    }

    /// True when no user is configured (AUTH is then not offered).
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Checks a name and password. Slow by design: call it on a blocking thread.
    pub fn verify(&self, name: &str, password: &[u8]) -> bool {
        match self.by_name.get(name) {
            Some(Hash::Argon2(h)) => Argon2::default()
                .verify_password(password, h.as_str())
                .is_ok(),
            Some(Hash::Bcrypt(h)) => bcrypt::verify(password, h).unwrap_or(false),
            None => {
                let decoy = self
                    .decoy
                    .get_or_init(|| hash_password(b"decoy password for unknown user names"));
                let _ = Argon2::default().verify_password(password, decoy.as_str());
                false
            }
        }
    }
}

fn parse_hash(hash: &str) -> Result<Hash, String> {
    if hash.starts_with("$argon2") {
        argon2::PasswordHash::new(hash).map_err(|e| format!("not a valid argon2 hash: {e}"))?;
        Ok(Hash::Argon2(hash.to_owned()))
    } else if ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| hash.starts_with(p))
    {
        if hash.len() != 60 {
            return Err("not a valid bcrypt hash (60 characters)".into());
        }
        Ok(Hash::Bcrypt(hash.to_owned()))
    } else {
        Err(
            "the hash must be argon2 ($argon2id$...) or bcrypt ($2b$...); \
             make one with `gmail-relay hash-password`"
                .into(),
        )
    }
}

/// An argon2id hash (PHC string) of `password` with a random salt.
pub fn hash_password(password: &[u8]) -> String {
    Argon2::default()
        .hash_password(password)
        .expect("argon2 with default parameters and a random salt")
        .to_string()
}

/// A well-formed bcrypt hash that no password matches, for tests that need users to exist.
#[cfg(test)]
pub(crate) const BCRYPT_SHAPED: &str =
    "$2b$04$abcdefghijklmnopqrstuuO2Fj7bWQ0F7d8uy8bQ3Vm1e4yTn4W.S";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2_and_bcrypt_hashes_verify() {
        let a = hash_password(b"printer-secret");
        let b = bcrypt::hash("scanner-secret", 4).unwrap();
        let entries = [format!("printer:{a}"), format!("scanner:{b}")];
        let users = Users::parse(entries.iter().map(String::as_str)).unwrap();
        assert!(users.verify("printer", b"printer-secret"));
        assert!(!users.verify("printer", b"wrong"));
        assert!(users.verify("scanner", b"scanner-secret"));
        assert!(!users.verify("scanner", b"printer-secret"));
        assert!(!users.verify("nobody", b"printer-secret"));
        assert!(
            !format!("{users:?}").contains("argon2"),
            "hashes are not printed"
        );
    }

    #[test]
    fn bad_entries_are_refused_with_their_index() {
        for (entry, why) in [
            ("nocolon", "name:hash"),
            (
                ":$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
                "user name",
            ),
            ("u:plaintext", "argon2"),
            ("u:$2b$04$short", "60"),
            ("u:$argon2id$garbage", "argon2"),
        ] {
            let err = Users::parse([&format!("ok:{BCRYPT_SHAPED}"), entry])
                .err()
                .unwrap();
            assert_eq!(err.0, 1, "{entry}");
            assert!(err.1.contains(why), "{entry}: {}", err.1);
        }
    }
}
