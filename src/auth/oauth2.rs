//! OAuth2 access tokens for XOAUTH2: the refresh-token grant, cached, refreshed ahead of
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

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Secret;
use crate::config::OAuth2Config;
use crate::secret::SecretSource;

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
}

/// An access token and when it expires.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub value: Secret,
    /// When it stops being valid.
    pub expires_at: Instant,
}

/// Issues access tokens from a refresh token. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
}

struct Inner {
    settings: OAuth2Config,
    http: reqwest::Client,
    state: Mutex<State>,
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
        f.debug_struct("TokenSource")
            .field("client_id", &self.inner.settings.client_id)
            .field("token_url", &self.inner.settings.token_url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<u64>,
    refresh_token: Option<String>,
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
        TokenSource {
            inner: Arc::new(Inner {
                settings,
                http: http_client(),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &OAuth2Config {
        &self.inner.settings
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
        let margin = self.inner.settings.refresh_before;
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

    fn refresh_token(&self) -> Result<Secret, TokenError> {
        let settings = &self.inner.settings;
        settings.refresh_token.load().map_err(|e| {
            TokenError::Rejected(format!(
                "cannot read {}.refresh_token_file: {e}; run `gmail-relay oauth authorize`",
                settings.section
            ))
        })
    }

    async fn refresh(&self) -> Result<AccessToken, TokenError> {
        let settings = &self.inner.settings;
        let refresh_token = self.refresh_token()?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose().to_owned()),
            ("client_id", settings.client_id.clone()),
        ];
        if let Some(secret) = client_secret(settings)? {
            form.push(("client_secret", secret.expose().to_owned()));
        }
        let reply = post_form(
            &self.inner.http,
            &settings.token_url,
            &form,
            &settings.section,
        )
        .await?;
        let access = reply.access_token.ok_or_else(|| {
            TokenError::Unavailable("the token endpoint answered without an access_token".into())
        })?;
        if access.len() > 8192 {
            return Err(TokenError::Unavailable(format!(
                "the access token is {} bytes, more than any Google issues",
                access.len()
            )));
        }
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(3600));
        if let (Some(new), SecretSource::File(path)) =
            (reply.refresh_token.as_deref(), &settings.refresh_token)
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
        tracing::debug!(
            expires_in = lifetime.as_secs(),
            "OAuth2 access token refreshed"
        );
        Ok(AccessToken {
            value: Secret::new(access),
            expires_at: Instant::now() + lifetime,
        })
    }
}

/// The client secret, read from its file if it is kept in one.
pub(crate) fn client_secret(settings: &OAuth2Config) -> Result<Option<Secret>, TokenError> {
    settings
        .client_secret
        .as_ref()
        .map(|s| {
            s.load().map_err(|e| {
                TokenError::Rejected(format!(
                    "cannot read {}.client_secret_file: {e}",
                    settings.section
                ))
            })
        })
        .transpose()
}

/// POSTs a form to a token endpoint and classifies the answer.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
    section: &str,
) -> Result<TokenReplyOk, TokenError> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| TokenError::Unavailable(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| TokenError::Unavailable(format!("{url}: {}", error_chain(&e))))?;
    let reply: Option<TokenReply> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        let reply = reply.ok_or_else(|| {
            TokenError::Unavailable(format!(
                "{url} answered {status} with a body that is not JSON"
            ))
        })?;
        return Ok(TokenReplyOk {
            access_token: reply.access_token,
            expires_in: reply.expires_in,
            refresh_token: reply.refresh_token,
        });
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(TokenError::Unavailable(format!("{url} answered {status}")));
    }
    let (error, description) = reply
        .map(|r| {
            (
                r.error.unwrap_or_default(),
                r.error_description.unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    Err(TokenError::Rejected(match error.as_str() {
        "invalid_grant" => format!(
            "refresh token rejected by Google (invalid_grant{}): re-authorize with \
             `gmail-relay oauth authorize`; apps in Testing status lose refresh tokens after 7 \
             days, and a password change revokes tokens with Gmail scopes",
            if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            }
        ),
        "invalid_client" | "unauthorized_client" => format!(
            "Google rejects the OAuth client ({error}: {description}): check \
             {section}.client_id and client_secret"
        ),
        _ => format!("{url} answered {status} {error} {description}"),
    }))
}

/// A successful token reply.
pub(crate) struct TokenReplyOk {
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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
