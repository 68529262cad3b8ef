//! Credentials: who the relay logs in to Gmail as, and with what; and who may log in to the
//! relay's own listener (`users`).
//!
//! Owns the secret types ([`Secret`]) and turns the configured credentials into what one
//! login needs ([`Login`]). The delivery side asks for a `Login` each time it opens an upstream
//! connection, so a credential that changes (a rotated app password; an OAuth2 access token,
//! later) is picked up by the next connection without touching connections already open.
//!
//! Invariant: nothing in this module, and nothing holding its types, can print a secret:
//! [`Secret`] and [`Login`] redact themselves in `Debug` and `Display`.

mod secret;
mod users;

pub use secret::{Secret, SecretFileError};
pub use users::{Users, hash_password};

/// The account and secret the relay authenticates to the upstream with.
#[derive(Debug, Clone)]
pub struct Credentials {
    username: String,
    method: Method,
}

#[derive(Debug, Clone)]
enum Method {
    /// An app password, sent with SASL PLAIN (or LOGIN when PLAIN is not offered).
    Password(Secret),
}

/// What one upstream login uses.
#[derive(Debug, Clone)]
pub struct Login {
    /// The account name (the Gmail address).
    pub username: String,
    /// The secret for a password mechanism (PLAIN or LOGIN).
    pub password: Secret,
}

impl Credentials {
    /// Credentials for an app password (or any password) login.
    pub fn password(username: impl Into<String>, password: Secret) -> Self {
        Credentials {
            username: username.into(),
            method: Method::Password(password),
        }
    }

    /// The account name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// What the next login should send.
    pub fn login(&self) -> Login {
        match &self.method {
            Method::Password(secret) => Login {
                username: self.username.clone(),
                password: secret.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_print_the_password() {
        let c = Credentials::password("me@gmail.com", Secret::new("s3cr3t-pw"));
        let shown = format!("{c:?} {:?}", c.login());
        assert!(shown.contains("me@gmail.com"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
