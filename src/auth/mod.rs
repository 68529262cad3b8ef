//! Credentials: who the relay logs in to Gmail as, and with what; and who may log in to the
//! relay's own listener (`users`).
//!
//! Turns the configured credentials ([`crate::config::AuthConfig`]: data, with secrets as
//! references) into what one login needs ([`Login`]). The delivery side asks for a `Login` each
//! time it opens an upstream connection, so a credential that changes (a refreshed OAuth2
//! access token) is picked up by the next connection without touching connections already
//! open; a changed password file is read again when the daemon prepares a reloaded
//! configuration.
//!
//! Invariant: nothing in this module, and nothing holding its types, can print a secret:
//! [`Secret`] redacts itself in `Debug` and `Display`, and every type holding one prints
//! through it.
//!
//! - `users`: the listener's users (argon2/bcrypt); `oauth2`: access tokens from a refresh
//!   token, for XOAUTH2; `authorize`: getting that refresh token. The secret types live in the
//!   leaf module [`crate::secret`] (the configuration holds them too) and are re-exported here.

pub mod authorize;
mod oauth2;
pub mod service_account;
pub(crate) mod users;

pub use crate::secret::{Secret, SecretFileError, SecretSource};
pub(crate) use oauth2::error_chain;
pub use oauth2::{
    AccessToken, GMAIL_SCOPE, GOOGLE_AUTH_URL, GOOGLE_TOKEN_URL, TokenError, TokenSource,
    write_secret_file, xoauth2_response,
};
pub use service_account::{KeyFileError, ServiceKey};
pub use users::{Users, hash_password};

use std::sync::Arc;

use crate::config::{AuthConfig, UpstreamConfig};

/// A configured secret could not be read or used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct CredentialsError {
    /// The key that names it, e.g. `upstream.password_file`.
    pub key: String,
    /// Why it could not be read or used.
    pub reason: String,
}

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
    /// OAuth2 access tokens, sent with SASL XOAUTH2; never a password.
    OAuth2(TokenSource),
    /// No AUTH (Google Workspace's SMTP relay service, which knows the relay by its address).
    None,
    /// A service account acting as the mailbox `username`, with XOAUTH2.
    ServiceAccount(Arc<ServiceAccount>),
}

/// A service account's key and where it gets tokens.
#[derive(Debug)]
struct ServiceAccount {
    key: Arc<ServiceKey>,
    /// The config section of the service account (`accounts.NAME.service_account`).
    section: String,
    /// Each sender logs in as its own mailbox (`impersonate_sender`).
    per_sender: bool,
    /// The account of such senders itself, which has no mailbox and never logs in.
    base: bool,
    /// Tokens for `username`; for the per-sender base, which never logs in itself, the source
    /// its senders' own are made from.
    source: TokenSource,
}

/// What one upstream login uses.
#[derive(Debug, Clone)]
pub enum Login {
    /// AUTH PLAIN or LOGIN.
    Password {
        /// The account name.
        username: String,
        /// The password.
        password: Secret,
    },
    /// AUTH XOAUTH2.
    XOAuth2 {
        /// The account name.
        username: String,
        /// The access token.
        token: AccessToken,
    },
    /// No AUTH.
    None,
}

impl Credentials {
    /// The credentials `cfg` describes; a password kept in a file is read now.
    pub fn from_config(cfg: &UpstreamConfig) -> Result<Credentials, CredentialsError> {
        match &cfg.auth {
            AuthConfig::Password(source) => {
                let key = match source {
                    SecretSource::Inline(_) => cfg.key("password"),
                    SecretSource::File(_) => cfg.key("password_file"),
                };
                let secret = source.load().map_err(|e| CredentialsError {
                    key,
                    reason: e.to_string(),
                })?;
                Ok(Credentials::password(cfg.username.clone(), secret))
            }
            AuthConfig::XOAuth2(oauth2) => {
                Ok(Credentials::oauth2(cfg.username.clone(), oauth2.clone()))
            }
            AuthConfig::None => Ok(Credentials {
                username: cfg.username.clone(),
                method: Method::None,
            }),
            AuthConfig::ServiceAccount(sa) => {
                let key = ServiceKey::load(&sa.key_file).map_err(|e| CredentialsError {
                    key: format!("{}.key_file", sa.section),
                    reason: e.to_string(),
                })?;
                let token_url = sa
                    .token_url
                    .clone()
                    .unwrap_or_else(|| key.token_uri.clone());
                // (A token_url set in the config was checked with it; the key file's is new.)
                if sa.token_url.is_none()
                    && let Err(why) = crate::config::check_endpoint(&token_url)
                {
                    return Err(CredentialsError {
                        key: format!("{}.key_file", sa.section),
                        reason: format!("token_uri: {why}; set {}.token_url", sa.section),
                    });
                }
                let key = Arc::new(key);
                // The per-sender base has no mailbox of its own (its username is empty).
                let subject = if cfg.impersonate_sender {
                    ""
                } else {
                    &cfg.username
                };
                let source =
                    TokenSource::service_account(key.clone(), subject, &token_url, &sa.section);
                Ok(Credentials {
                    username: cfg.username.clone(),
                    method: Method::ServiceAccount(Arc::new(ServiceAccount {
                        key,
                        section: sa.section.clone(),
                        per_sender: cfg.impersonate_sender,
                        base: cfg.impersonate_sender,
                        source,
                    })),
                })
            }
        }
    }

    /// The credentials of one sender's own mailbox, for an account that logs in as each
    /// sender (`impersonate_sender`); `None` for any other account.
    pub fn for_mailbox(&self, mailbox: &str) -> Option<Credentials> {
        let Method::ServiceAccount(sa) = &self.method else {
            return None;
        };
        if !sa.per_sender {
            return None;
        }
        Some(Credentials {
            username: mailbox.to_owned(),
            method: Method::ServiceAccount(Arc::new(ServiceAccount {
                key: sa.key.clone(),
                section: sa.section.clone(),
                per_sender: true,
                base: false,
                source: sa.source.for_subject(mailbox)?,
            })),
        })
    }

    /// The service account's key, for a service-account login.
    pub fn service_key(&self) -> Option<&ServiceKey> {
        match &self.method {
            Method::ServiceAccount(sa) => Some(&sa.key),
            _ => None,
        }
    }

    /// Credentials for an app password (or any password) login.
    pub fn password(username: impl Into<String>, password: Secret) -> Self {
        Credentials {
            username: username.into(),
            method: Method::Password(password),
        }
    }

    /// Credentials for XOAUTH2 with tokens from `settings`.
    pub fn oauth2(username: impl Into<String>, settings: crate::config::OAuth2Config) -> Self {
        Credentials {
            username: username.into(),
            method: Method::OAuth2(TokenSource::new(settings)),
        }
    }

    /// The account name.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password, for password logins.
    pub fn password_secret(&self) -> Option<&Secret> {
        match &self.method {
            Method::Password(s) => Some(s),
            _ => None,
        }
    }

    /// The token source, for XOAUTH2 logins (a service account's for its fixed mailbox).
    pub fn token_source(&self) -> Option<&TokenSource> {
        match &self.method {
            Method::OAuth2(t) => Some(t),
            Method::ServiceAccount(sa) if sa.base => None,
            Method::ServiceAccount(sa) => Some(&sa.source),
            _ => None,
        }
    }

    /// What the next login should send (for OAuth2, a token valid for a while yet).
    pub async fn login(&self) -> Result<Login, TokenError> {
        match &self.method {
            Method::Password(secret) => Ok(Login::Password {
                username: self.username.clone(),
                password: secret.clone(),
            }),
            Method::OAuth2(source) => Ok(Login::XOAuth2 {
                username: self.username.clone(),
                token: source.token().await?,
            }),
            Method::None => Ok(Login::None),
            Method::ServiceAccount(sa) => {
                if sa.base {
                    return Err(TokenError::Rejected(format!(
                        "{}: this account logs in as each sender; it has no mailbox of its own",
                        sa.section
                    )));
                }
                let token = sa.source.token().await.map_err(|e| match e {
                    // A fixed mailbox that does not exist is the operator's to fix: pause.
                    TokenError::NoSuchMailbox(why) if !sa.per_sender => {
                        TokenError::Rejected(format!(
                            "{why}; make {}.subject (or the account's username, which it defaults to) \
                             a mailbox of the domain",
                            sa.section
                        ))
                    }
                    other => other,
                })?;
                Ok(Login::XOAuth2 {
                    username: self.username.clone(),
                    token,
                })
            }
        }
    }

    /// The upstream rejected this login: an OAuth2 token is forgotten, so the next login
    /// refreshes it.
    pub async fn rejected(&self, login: &Login) {
        if let (Some(source), Login::XOAuth2 { token, .. }) = (self.token_source(), login) {
            source.invalidate(&token.value).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn credentials_never_print_the_password() {
        let c = Credentials::password("me@gmail.com", Secret::new("s3cr3t-pw"));
        let shown = format!("{c:?} {:?}", c.login().await);
        assert!(shown.contains("me@gmail.com"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }
}
