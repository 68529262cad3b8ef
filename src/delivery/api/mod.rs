//! The Gmail API transport (`transport = "api"`): the last hop as an HTTPS upload to
//! `users.messages.send` on port 443, for hosts whose SMTP ports are blocked. Everything
//! before it (intake, spool, scheduler, pauses, budgets, accounts) is the same as for SMTP.
//!
//! One upload per attempt, `userId` `me`, the access token of the account (OAuth2 refresh
//! token or service account) as `Authorization: Bearer`. Up to [`SIMPLE_MAX`] the message goes
//! in one request (`uploadType=media`); above, as a resumable upload (a POST that opens a
//! session, then a PUT of the bytes to the session URI, which must be on the same origin).
//! Larger than [`MAX_MESSAGE`], the API's own limit, it fails at once without an upload.
//! The HTTP client keeps its connections: HTTP/2 over one TLS connection when the server
//! offers it by ALPN, HTTP/1.1 keep-alive otherwise; the server certificate is verified
//! against the web PKI roots plus `ca_file`, as for SMTP. A 401 refreshes the token and
//! uploads once more.
//!
//! - `upload`: the bytes uploaded, with the recipients made to agree with the envelope;
//! - `outcome`: what an answer means (the table beside the SMTP one in `classify`).
//!
//! The API gives one outcome per message: every pending recipient is delivered, or none.

mod outcome;
mod upload;

pub use outcome::{Answer, Outcome, classify};
pub use upload::{Upload, prepare};

use std::time::{Duration, SystemTime};

use super::connection::{OpenError, login_error};
use super::tls::TlsSetupError;
use super::{Outgoing, Pause, PauseKind, RecipientOutcome, Report, Setup};
use crate::auth::{Login, error_chain};
use crate::config::UpstreamConfig;
use crate::observe::Metrics;

/// The largest message the API takes (its discovery document's `maxSize`, 35 MiB).
pub const MAX_MESSAGE: usize = crate::config::defaults::GMAIL_API_MAX_SIZE as usize;
/// Messages larger than this go as a resumable upload.
pub const SIMPLE_MAX: usize = 5 * 1024 * 1024;

const SEND_PATH: &str = "/upload/gmail/v1/users/me/messages/send";
const PROFILE_PATH: &str = "/gmail/v1/users/me/profile";

/// The HTTP client of one account's API transport. Cheap to clone (shared connections).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    /// `api_url` without a trailing slash.
    base: String,
    /// Bound on each request without a body to upload.
    timeout: Duration,
}

impl Api {
    /// The client for `cfg`'s `api_url`, trusting the web PKI roots plus `ca_file`.
    pub fn new(cfg: &UpstreamConfig) -> Result<Api, TlsSetupError> {
        let mut tls = super::tls::client_config(cfg)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(cfg.idle_timeout)
            .pool_max_idle_per_host(cfg.max_connections)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| TlsSetupError::Other(e.to_string()))?;
        Ok(Api {
            http,
            base: cfg.api_url.trim_end_matches('/').to_owned(),
            timeout: cfg.timeout,
        })
    }

    /// Uploads `msg` for `recipients` as `setup`'s mailbox.
    pub async fn send(
        &self,
        setup: &Setup,
        msg: &Outgoing<'_>,
        recipients: &[String],
        metrics: &Metrics,
    ) -> Report {
        let all = |outcome: RecipientOutcome| Report {
            outcomes: vec![outcome; recipients.len()],
            pause: None,
        };
        let upload = prepare(msg.body, recipients);
        if upload.bytes.len() > MAX_MESSAGE {
            return all(RecipientOutcome::Failed(format!(
                "the message is {} bytes; the Gmail API accepts at most {MAX_MESSAGE} (35 MiB); \
                 not sent",
                upload.bytes.len()
            )));
        }
        if !upload.withheld.is_empty() {
            tracing::info!(
                account = %setup.cfg.name,
                withheld = %upload.withheld.join(", "),
                "the message's To:/Cc: name addresses that are not its pending recipients; those \
                 fields are renamed X-Gmail-Relay-Original-* so the Gmail API sends to the \
                 envelope recipients only"
            );
        }
        if !upload.bcc.is_empty() {
            tracing::debug!(
                account = %setup.cfg.name,
                bcc = %upload.bcc.join(", "),
                "envelope recipients that no To:/Cc: names go in a Bcc: field the relay adds \
                 (the Gmail API sends to the headers' addresses; Gmail removes Bcc: from what \
                 recipients see)"
            );
        }
        let bytes = bytes::Bytes::from(upload.bytes);
        let limit = super::upload_limit(self.timeout, bytes.len());
        for last_try in [false, true] {
            let (login, bearer) = match bearer(setup).await {
                Ok(b) => b,
                Err(OpenError::Pause(p)) => return Report::paused(recipients.len(), p),
                Err(OpenError::NoMailbox(why)) => return all(RecipientOutcome::Failed(why)),
            };
            let sent = if bytes.len() <= SIMPLE_MAX {
                self.simple(&bearer, bytes.clone(), limit).await
            } else {
                self.resumable(&bearer, bytes.clone(), limit).await
            };
            let response = match sent {
                Ok(r) => r,
                Err(Unsent::Http(e)) => {
                    let pause = self.transport_error(&e);
                    if e.is_connect() {
                        return Report::paused(recipients.len(), pause);
                    }
                    // The upload may have reached Google: try again later (at-least-once).
                    return all(RecipientOutcome::Deferred(pause.reason));
                }
                Err(Unsent::Elsewhere(session)) => {
                    let why = format!(
                        "the Gmail API at {} handed the upload to {session}, another origin; \
                         the access token goes only to {}: check {} and any proxy in between",
                        self.base,
                        self.base,
                        setup.cfg.key("api_url")
                    );
                    return Report::paused(
                        recipients.len(),
                        Pause::new(PauseKind::Unreachable, why),
                    );
                }
            };
            metrics.api_request(&setup.cfg.name, response.version);
            match classify(
                &response.answer(),
                SystemTime::now(),
                &setup.cfg.key("api_url"),
            ) {
                Outcome::Sent(id) => {
                    return all(RecipientOutcome::Delivered(format!(
                        "Gmail API: sent, message id {id}"
                    )));
                }
                Outcome::Unauthorized(why) if !last_try => {
                    tracing::info!(reason = %why, "the Gmail API rejected the access token; refreshing it and trying once more");
                    setup.credentials.rejected(&login).await;
                }
                Outcome::Unauthorized(why) => {
                    let why = format!(
                        "{why}; a freshly refreshed token was refused too: check that it \
                         belongs to {} and grants https://mail.google.com/",
                        setup.cfg.label()
                    );
                    return Report::paused(
                        recipients.len(),
                        Pause::new(PauseKind::Credentials, why),
                    );
                }
                Outcome::Pause(p) => return Report::paused(recipients.len(), p),
                Outcome::Fail(why) => return all(RecipientOutcome::Failed(why)),
                Outcome::Retry(why) => return all(RecipientOutcome::Deferred(why)),
            }
        }
        unreachable!("the loop returns on its second round")
    }

    /// Proves access without sending: a token, then `GET users/me/profile`. Returns what
    /// was done.
    pub async fn check(&self, setup: &Setup) -> Result<String, Pause> {
        let (login, bearer) = bearer(setup).await.map_err(|e| match e {
            OpenError::Pause(p) => p,
            OpenError::NoMailbox(why) => Pause::new(PauseKind::Credentials, why),
        })?;
        let scope = match &login {
            Login::XOAuth2 { token, .. } => token.scope.clone(),
            _ => None,
        };
        let url = format!("{}{PROFILE_PATH}", self.base);
        let request = self
            .http
            .get(&url)
            .header("Authorization", bearer)
            .timeout(self.timeout);
        let response = read(request).await.map_err(|e| self.transport_error(&e))?;
        if response.status == 200 {
            #[derive(serde::Deserialize)]
            struct Profile {
                #[serde(rename = "emailAddress")]
                email: Option<String>,
            }
            let email = serde_json::from_slice::<Profile>(&response.body)
                .ok()
                .and_then(|p| p.email)
                .unwrap_or_else(|| "(no address in the answer)".into());
            return Ok(format!(
                "reached the Gmail API at {} over {} as {email}; the token grants: {}",
                self.base,
                response.version,
                scope
                    .as_deref()
                    .unwrap_or("(the token endpoint did not say)")
            ));
        }
        let api_url = setup.cfg.key("api_url");
        Err(
            match classify(&response.answer(), SystemTime::now(), &api_url) {
                Outcome::Pause(p) => p,
                Outcome::Unauthorized(why) | Outcome::Fail(why) => {
                    Pause::new(PauseKind::Credentials, why)
                }
                Outcome::Retry(why) | Outcome::Sent(why) => Pause::new(PauseKind::Unreachable, why),
            },
        )
    }

    async fn simple(
        &self,
        bearer: &str,
        bytes: bytes::Bytes,
        limit: Duration,
    ) -> Result<Response, Unsent> {
        let url = format!("{}{SEND_PATH}?uploadType=media", self.base);
        let request = self
            .http
            .post(url)
            .header("Authorization", bearer)
            .header("Content-Type", "message/rfc822")
            .body(bytes)
            .timeout(limit);
        Ok(read(request).await?)
    }

    /// The resumable protocol: open a session, then PUT the bytes to it.
    async fn resumable(
        &self,
        bearer: &str,
        bytes: bytes::Bytes,
        limit: Duration,
    ) -> Result<Response, Unsent> {
        let url = format!("{}{SEND_PATH}?uploadType=resumable", self.base);
        let opened = self
            .http
            .post(url)
            .header("Authorization", bearer)
            .header("X-Upload-Content-Type", "message/rfc822")
            .header("X-Upload-Content-Length", bytes.len().to_string())
            .header("Content-Type", "application/json; charset=UTF-8")
            .body("{}")
            .timeout(self.timeout)
            .send()
            .await?;
        let status = opened.status().as_u16();
        let location = opened
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(session) = location.filter(|_| status == 200) else {
            return Ok(collect(opened).await?);
        };
        // The token goes only where the API lives.
        if !self.same_origin(&session) {
            return Err(Unsent::Elsewhere(session));
        }
        let request = self
            .http
            .put(session)
            .header("Authorization", bearer)
            .header("Content-Type", "message/rfc822")
            .body(bytes)
            .timeout(limit);
        Ok(read(request).await?)
    }

    fn same_origin(&self, other: &str) -> bool {
        match (url::Url::parse(&self.base), url::Url::parse(other)) {
            (Ok(a), Ok(b)) => a.origin() == b.origin(),
            _ => false,
        }
    }

    /// What a request that got no answer means: the API cannot be reached or secured (with
    /// what to change), or (not a connect error) it broke off after the upload may have begun.
    fn transport_error(&self, e: &reqwest::Error) -> Pause {
        let chain = error_chain(e);
        if !e.is_connect() {
            return Pause::new(
                PauseKind::Unreachable,
                format!("the Gmail API at {} did not answer: {chain}", self.base),
            );
        }
        let kind = if chain.contains("certificate") || chain.contains("TLS") {
            PauseKind::Tls
        } else {
            PauseKind::Unreachable
        };
        Pause::new(
            kind,
            format!("cannot reach the Gmail API at {}: {chain}", self.base),
        )
    }
}

/// Why an upload got no answer to classify.
enum Unsent {
    /// The request failed (no connection, or it broke off).
    Http(reqwest::Error),
    /// The API handed the upload to this session URI on another origin, which is not
    /// followed: the access token would go there.
    Elsewhere(String),
}

impl From<reqwest::Error> for Unsent {
    fn from(e: reqwest::Error) -> Unsent {
        Unsent::Http(e)
    }
}

/// A token for `setup`'s mailbox, and the `Authorization` value that carries it.
async fn bearer(setup: &Setup) -> Result<(Login, String), OpenError> {
    let login = setup.credentials.login().await.map_err(login_error)?;
    let Login::XOAuth2 { token, .. } = &login else {
        // (The configuration allows the API only with OAuth2 or a service account.)
        return Err(OpenError::Pause(Pause::new(
            PauseKind::Credentials,
            "the Gmail API needs an OAuth2 or service account token",
        )));
    };
    let bearer = format!("Bearer {}", token.value.expose());
    Ok((login, bearer))
}

/// An answer, read whole.
struct Response {
    status: u16,
    /// "HTTP/2" or "HTTP/1.1".
    version: &'static str,
    retry_after: Option<String>,
    body: bytes::Bytes,
}

impl Response {
    fn answer(&self) -> Answer<'_> {
        Answer {
            status: self.status,
            retry_after: self.retry_after.as_deref(),
            body: &self.body,
        }
    }
}

async fn read(request: reqwest::RequestBuilder) -> Result<Response, reqwest::Error> {
    collect(request.send().await?).await
}

async fn collect(response: reqwest::Response) -> Result<Response, reqwest::Error> {
    let status = response.status().as_u16();
    let version = match response.version() {
        reqwest::Version::HTTP_2 => "HTTP/2",
        reqwest::Version::HTTP_11 => "HTTP/1.1",
        _ => "HTTP",
    };
    let retry_after = response
        .headers()
        .get("Retry-After")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.bytes().await?;
    Ok(Response {
        status,
        version,
        retry_after,
        body,
    })
}
