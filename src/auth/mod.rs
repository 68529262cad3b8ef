//! Credentials: who the relay logs in to Gmail as, and with what; and who may log in to the
//! relay's own listener (`users`).
//!
//! Owns the secret types ([`Secret`]) and turns the configured credentials into what one
//! login needs ([`Login`]). The delivery side asks for a `Login` each time it opens an upstream
//! connection, so a credential that changes (a rotated app password; an OAuth2 access token,
//! later) is picked up by the next connection without touching connections already open.
//!
//! Invariant: nothing in this module, and nothing holding its types, can print a secret:
//! [`Secret`] redacts itself in `Debug` and `Display`, and every type holding one prints
//! through it.
//!
//! - `secret`: the redacted string type; `users`: the listener's users (argon2/bcrypt);
//!   `oauth2`: access tokens from a refresh token, for XOAUTH2.

pub mod authorize;
mod oauth2;
mod secret;
mod users;

pub use oauth2::{
    AccessToken, GMAIL_SCOPE, GOOGLE_AUTH_URL, GOOGLE_TOKEN_URL, OAuth2Settings, RefreshToken,
    TokenError, TokenSource, write_secret_file, xoauth2_response,
};
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
    /// OAuth2 access tokens, sent with SASL XOAUTH2; never a password.
    OAuth2(TokenSource),
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
}

impl Credentials {
    /// Credentials for an app password (or any password) login.
    pub fn password(username: impl Into<String>, password: Secret) -> Self {
        Credentials {
            username: username.into(),
            method: Method::Password(password),
        }
    }

    /// Credentials for XOAUTH2 with tokens from `settings`.
    pub fn oauth2(username: impl Into<String>, settings: OAuth2Settings) -> Self {
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
            Method::OAuth2(_) => None,
        }
    }

    /// The token source, for XOAUTH2 logins.
    pub fn token_source(&self) -> Option<&TokenSource> {
        match &self.method {
            Method::Password(_) => None,
            Method::OAuth2(t) => Some(t),
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
        }
    }

    /// The upstream rejected this login: an OAuth2 token is forgotten, so the next login
    /// refreshes it.
    pub async fn rejected(&self, login: &Login) {
        if let (Method::OAuth2(source), Login::XOAuth2 { token, .. }) = (&self.method, login) {
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
