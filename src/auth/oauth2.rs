//! OAuth2 access tokens for XOAUTH2, from a refresh token (an OAuth client's grant) or from a
//! service account's signed assertion for one mailbox (RFC 7523), cached, refreshed ahead of
//! expiry, one refresh at a time.
//!
//! [`TokenSource::token`] returns a token valid for at least `refresh_before` more (5 minutes by
//! default), refreshing it first if needed. Concurrent callers share one refresh: the state
//! lock is held across it, so a burst of new connections makes one request to the token
//! endpoint. When the endpoint fails temporarily (5xx, timeout) while the cached token is still
//! valid, the cached token is used and the refresh is retried later with backoff; delivery does
//! not stop. When Google rejects the refresh token itself (`invalid_grant`, a revoked or expired
//! grant, a bad client), the error says so and what to do; the caller pauses delivery.
//!
//! A refresh token kept in a file is read again at each refresh (so a fixed one is picked up
//! without a restart), and if the endpoint returns a new refresh token it is written back to
//! that file atomically, mode 0600. No token, secret or refresh token is ever logged: they are
//! [`Secret`]s.
//!
//! This file keeps the cache and the two grants; the request to the token endpoint, its reply
//! and the wording of its refusals are in `endpoint`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Secret;
use super::service_account::ServiceKey;
use crate::config::OAuth2Config;
use crate::secret::SecretSource;

mod endpoint;
use endpoint::{JWT_BEARER, access_token, jwt_refusal};
pub(crate) use endpoint::{client_secret, error_chain, post_form, refresh_refusal};

/// Google's token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Google's authorization endpoint (for `gmail-relay oauth authorize`).
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// The scope Gmail's SMTP server needs.
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Google refuses the grant or the client: only the operator can fix it.
    #[error("{0}")]
    Rejected(String),
    /// The token endpoint failed for now (network, 5xx, timeout).
    #[error("token endpoint unavailable: {0}")]
    Unavailable(String),
    /// A service account asked to act as an address that is not a mailbox of the domain
    /// (`invalid_grant`, "Invalid email or User ID"): retrying cannot help.
    #[error("{0}")]
    NoSuchMailbox(String),
}

/// An access token and when it expires.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub value: Secret,
    /// When it stops being valid.
    pub expires_at: Instant,
    /// The scopes it grants, when the token endpoint said (space-separated).
    pub scope: Option<String>,
}

/// Issues access tokens from a refresh token. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    grant: Grant,
    http: reqwest::Client,
    state: Mutex<State>,
}

/// How a token is obtained.
enum Grant {
    /// An OAuth client's refresh token.
    Refresh(OAuth2Config),
    /// A service account acting as `subject`.
    Jwt {
        key: Arc<ServiceKey>,
        subject: String,
        token_url: String,
        /// The config section of the service account (`upstream.service_account`).
        section: String,
    },
}

impl Grant {
    /// Refresh when the token expires within this.
    fn refresh_before(&self) -> Duration {
        match self {
            Grant::Refresh(s) => s.refresh_before,
            Grant::Jwt { .. } => Duration::from_secs(300),
        }
    }

    fn token_url(&self) -> &str {
        match self {
            Grant::Refresh(s) => &s.token_url,
            Grant::Jwt { token_url, .. } => token_url,
        }
    }
}

#[derive(Default)]
struct State {
    token: Option<AccessToken>,
    /// Consecutive temporary failures, and when the next refresh may be tried.
    failures: u32,
    retry_at: Option<Instant>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("TokenSource");
        match &self.inner.grant {
            Grant::Refresh(s) => d.field("client_id", &s.client_id),
            Grant::Jwt { key, subject, .. } => d.field("key", key).field("subject", subject),
        };
        d.field("token_url", &self.inner.grant.token_url())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// A rustls client configuration trusting the web PKI, for HTTPS to Google.
fn http_client() -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .build()
        .expect("a client with a preconfigured rustls backend")
}

impl TokenSource {
    /// A source for these settings; nothing is fetched yet.
    pub fn new(settings: OAuth2Config) -> TokenSource {
        TokenSource::with_grant(Grant::Refresh(settings))
    }

    /// A source of tokens for a service account acting as `subject`, from `token_url`.
    pub fn service_account(
        key: Arc<ServiceKey>,
        subject: &str,
        token_url: &str,
        section: &str,
    ) -> TokenSource {
        TokenSource::with_grant(Grant::Jwt {
            key,
            subject: subject.to_owned(),
            token_url: token_url.to_owned(),
            section: section.to_owned(),
        })
    }

    fn with_grant(grant: Grant) -> TokenSource {
        TokenSource::sharing(grant, http_client())
    }

    fn sharing(grant: Grant, http: reqwest::Client) -> TokenSource {
        TokenSource {
            inner: Arc::new(Inner {
                grant,
                http,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A service account's source for another mailbox, `subject`, with its own token cache
    /// but this one's key and HTTPS connections; `None` for a refresh-token source.
    pub fn for_subject(&self, subject: &str) -> Option<TokenSource> {
        let Grant::Jwt {
            key,
            token_url,
            section,
            ..
        } = &self.inner.grant
        else {
            return None;
        };
        let grant = Grant::Jwt {
            key: key.clone(),
            subject: subject.to_owned(),
            token_url: token_url.clone(),
            section: section.clone(),
        };
        Some(TokenSource::sharing(grant, self.inner.http.clone()))
    }

    /// The OAuth client settings, for a refresh-token source.
    pub fn settings(&self) -> Option<&OAuth2Config> {
        match &self.inner.grant {
            Grant::Refresh(s) => Some(s),
            Grant::Jwt { .. } => None,
        }
    }

    /// The HTTPS client used for the token endpoint.
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// A token valid for at least `refresh_before`, or the cached one if a refresh fails only
    /// temporarily while it is still valid.
    pub async fn token(&self) -> Result<AccessToken, TokenError> {
        let mut state = self.inner.state.lock().await;
        let now = Instant::now();
        let margin = self.inner.grant.refresh_before();
        if let Some(t) = &state.token
            && t.expires_at > now + margin
        {
            return Ok(t.clone());
        }
        let still_valid = state.token.clone().filter(|t| t.expires_at > now);
        if let (Some(retry_at), Some(t)) = (state.retry_at, &still_valid)
            && now < retry_at
        {
            return Ok(t.clone());
        }
        match self.refresh().await {
            Ok(token) => {
                state.token = Some(token.clone());
                state.failures = 0;
                state.retry_at = None;
                Ok(token)
            }
            Err(TokenError::Unavailable(why)) => {
                state.failures += 1;
                let backoff = Duration::from_secs(5u64 << state.failures.min(6));
                state.retry_at = Some(now + backoff);
                match still_valid {
                    Some(t) => {
                        tracing::warn!(
                            reason = %why,
                            retry_in = %humantime::format_duration(backoff),
                            "could not refresh the OAuth2 access token; using the current one while it lasts"
                        );
                        Ok(t)
                    }
                    None => Err(TokenError::Unavailable(why)),
                }
            }
            Err(rejected) => {
                state.token = None;
                Err(rejected)
            }
        }
    }

    /// Forgets `token` if it is the cached one (the upstream rejected it): the next
    /// [`TokenSource::token`] refreshes.
    pub async fn invalidate(&self, token: &Secret) {
        let mut state = self.inner.state.lock().await;
        if state.token.as_ref().is_some_and(|t| &t.value == token) {
            state.token = None;
            state.retry_at = None;
        }
    }

    fn refresh_token(settings: &OAuth2Config) -> Result<Secret, TokenError> {
        settings.refresh_token.load().map_err(|e| {
            TokenError::Rejected(format!(
                "cannot read {}.refresh_token_file: {e}; run `gmail-relay oauth authorize`",
                settings.section
            ))
        })
    }

    async fn refresh(&self) -> Result<AccessToken, TokenError> {
        match &self.inner.grant {
            Grant::Refresh(settings) => self.refresh_grant(settings).await,
            Grant::Jwt {
                key,
                subject,
                token_url,
                section,
            } => self.jwt_grant(key, subject, token_url, section).await,
        }
    }

    /// Exchanges a fresh assertion for a token (a service account has no refresh token).
    async fn jwt_grant(
        &self,
        key: &ServiceKey,
        subject: &str,
        token_url: &str,
        section: &str,
    ) -> Result<AccessToken, TokenError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let assertion = key.assertion(subject, token_url, now);
        let form = vec![
            ("grant_type", JWT_BEARER.to_owned()),
            ("assertion", assertion.expose().to_owned()),
        ];
        let reply = post_form(&self.inner.http, token_url, &form)
            .await
            .map_err(|r| jwt_refusal(r, key, subject, section))?;
        access_token(reply, subject)
    }

    async fn refresh_grant(&self, settings: &OAuth2Config) -> Result<AccessToken, TokenError> {
        let refresh_token = Self::refresh_token(settings)?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("client_id", settings.client_id.clone()),
        ];
        if let Some(secret) = client_secret(settings)? {
            form.push(("client_secret", secret.expose().to_owned()));
        }
        let reply = post_form(&self.inner.http, &settings.token_url, &form)
            .await
            .map_err(|r| refresh_refusal(r, &settings.section))?;
        let new_refresh = reply.refresh_token.clone();
        let token = access_token(reply, "the account")?;
        if let (Some(new), SecretSource::File(path)) =
            (new_refresh.as_deref(), &settings.refresh_token)
            && new != refresh_token.expose()
        {
            match write_secret_file(path, new) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "stored the new refresh token Google issued")
                }
                Err(e) => tracing::error!(
                    file = %path.display(), error = %e,
                    "could not store the new refresh token; the old one may stop working"
                ),
            }
        }
        Ok(token)
    }
}

/// Writes a secret to `path` atomically (temp file in the same directory, fsync, rename),
/// mode 0600.
pub fn write_secret_file(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(value.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The SASL XOAUTH2 initial response (before base64): `user=U^Aauth=Bearer T^A^A`.
pub fn xoauth2_response(user: &str, token: &Secret) -> String {
    format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose())
}

#[cfg(test)]
mod tests;
