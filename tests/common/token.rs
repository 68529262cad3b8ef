//! A fake OAuth2 token endpoint (Google's) on loopback, plain HTTP: refresh-token grants give
//! `tok-N` access tokens; refresh tokens in `rejected` get `invalid_grant`; scripted replies
//! come first. Authorization-code grants give the refresh token `1//from-code`.
//!
//! Service accounts' JWT-bearer grants (RFC 7523) are checked as Google does: the RS256
//! signature against the public half of [`super::service_key::key`], the header's `kid`, and
//! the claims `iss`, `aud` (this endpoint's URL), `scope`, `sub`, `iat` (now, give or take a
//! minute) and `exp` (after `iat`, at most an hour later). A bad assertion gets
//! `invalid_grant` and is recorded in [`Jwt::errors`].

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Script {
    /// (status, JSON body) for the next requests.
    pub replies: VecDeque<(u16, String)>,
    /// Refresh tokens answered with `invalid_grant`.
    pub rejected: HashSet<String>,
    /// `expires_in` of issued tokens (default 3600).
    pub expires_in: Option<u64>,
    /// Domain-wide delegation is not granted: JWT grants get `unauthorized_client`.
    pub unauthorized: bool,
    /// Subjects that are not mailboxes of the domain: `invalid_grant`, "Invalid email or User
    /// ID".
    pub unknown_mailboxes: HashSet<String>,
    /// Wait this long before answering (so that concurrent requests would overlap).
    pub delay: Option<Duration>,
}

/// What the JWT-bearer grants showed.
#[derive(Debug, Default)]
pub struct Jwt {
    /// Every assertion, as sent.
    pub assertions: Vec<String>,
    /// The `sub` of every assertion that verified, in order.
    pub subjects: Vec<String>,
    /// (subject, access token) of every token issued for an assertion.
    pub issued: Vec<(String, String)>,
    /// Why assertions failed verification.
    pub errors: Vec<String>,
}

pub struct TokenEndpoint {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    /// Every request body (form-encoded), in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    /// The service accounts' assertions.
    pub jwt: Arc<Mutex<Jwt>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    pub async fn start() -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<Mutex<Script>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let jwt: Arc<Mutex<Jwt>> = Arc::default();
        let url = format!("http://{addr}/token");
        let (s, r, j) = (script.clone(), requests.clone(), jwt.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, r, j, url) = (s.clone(), r.clone(), j.clone(), url.clone());
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut sock).await else {
                        return;
                    };
                    let delay = s.lock().unwrap().delay;
                    if let Some(delay) = delay {
                        tokio::time::sleep(delay).await;
                    }
                    let (status, reply) = answer(&s, &r, &j, &url, body);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        reply.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        TokenEndpoint {
            addr,
            script,
            requests,
            jwt,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

fn field(body: &str, name: &str) -> String {
    url::form_urlencoded::parse(body.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn answer(
    script: &Mutex<Script>,
    requests: &Mutex<Vec<String>>,
    jwt: &Mutex<Jwt>,
    url: &str,
    body: String,
) -> (u16, String) {
    let n = {
        let mut r = requests.lock().unwrap();
        r.push(body.clone());
        r.len()
    };
    let mut s = script.lock().unwrap();
    if let Some(scripted) = s.replies.pop_front() {
        return scripted;
    }
    let expires = s.expires_in.unwrap_or(3600);
    match field(&body, "grant_type").as_str() {
        "refresh_token" if s.rejected.contains(&field(&body, "refresh_token")) => (
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#
                .into(),
        ),
        "refresh_token" => (
            200,
            format!(
                r#"{{"access_token":"tok-{n}","expires_in":{expires},"scope":"https://mail.google.com/","token_type":"Bearer"}}"#
            ),
        ),
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let assertion = field(&body, "assertion");
            let mut jwt = jwt.lock().unwrap();
            jwt.assertions.push(assertion.clone());
            let subject = match verify(&assertion, url) {
                Ok(subject) => subject,
                Err(why) => {
                    jwt.errors.push(why.clone());
                    return (
                        400,
                        serde_json::json!({"error": "invalid_grant", "error_description": why})
                            .to_string(),
                    );
                }
            };
            jwt.subjects.push(subject.clone());
            if s.unauthorized {
                return (
                    401,
                    r#"{"error":"unauthorized_client","error_description":"Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."}"#.into(),
                );
            }
            if s.unknown_mailboxes.contains(&subject) {
                return (
                    400,
                    r#"{"error":"invalid_grant","error_description":"Invalid email or User ID"}"#
                        .into(),
                );
            }
            let token = format!("tok-{n}");
            jwt.issued.push((subject, token.clone()));
            (
                200,
                format!(
                    r#"{{"access_token":"{token}","expires_in":{expires},"token_type":"Bearer"}}"#
                ),
            )
        }
        "authorization_code" => (
            200,
            format!(
                r#"{{"access_token":"tok-{n}","expires_in":{expires},"refresh_token":"1//from-code","scope":"https://mail.google.com/"}}"#
            ),
        ),
        other => (
            400,
            format!(r#"{{"error":"unsupported_grant_type","error_description":"{other}"}}"#),
        ),
    }
}

/// Checks a service account's assertion as Google would; returns its subject.
fn verify(assertion: &str, url: &str) -> Result<String, String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("Invalid JWT: {} parts, not 3", parts.len()));
    };
    let decode = |part: &str, what: &str| -> Result<serde_json::Value, String> {
        let bytes = B64URL
            .decode(part)
            .map_err(|e| format!("Invalid JWT: {what} is not base64url: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| format!("Invalid JWT: {what}: {e}"))
    };
    let signature = B64URL
        .decode(signature)
        .map_err(|e| format!("Invalid JWT Signature: not base64url: {e}"))?;
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &super::service_key::key().public_der,
    )
    .verify(format!("{header}.{claims}").as_bytes(), &signature)
    .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let header = decode(header, "header")?;
    let claims = decode(claims, "claims")?;
    let want = |v: &serde_json::Value, key: &str, expected: &str| -> Result<(), String> {
        match v[key].as_str() {
            Some(got) if got == expected => Ok(()),
            got => Err(format!("Invalid JWT: {key} is {got:?}, not {expected:?}")),
        }
    };
    want(&header, "alg", "RS256")?;
    want(&header, "typ", "JWT")?;
    want(&header, "kid", super::service_key::KEY_ID)?;
    want(&claims, "iss", super::service_key::CLIENT_EMAIL)?;
    want(&claims, "aud", url)?;
    want(&claims, "scope", "https://mail.google.com/")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (Some(iat), Some(exp)) = (claims["iat"].as_i64(), claims["exp"].as_i64()) else {
        return Err("Invalid JWT: iat and exp must be numbers".into());
    };
    if (iat - now).abs() > 60 || exp <= iat || exp - iat > 3600 {
        return Err(format!(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim. (iat {iat}, exp {exp}, \
             now {now})"
        ));
    }
    match claims["sub"].as_str() {
        Some(sub) if sub.contains('@') => Ok(sub.to_owned()),
        other => Err(format!("Invalid JWT: sub is {other:?}, not a mailbox")),
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Some(text[end + 4..end + 4 + len].to_string());
            }
        }
    }
}
