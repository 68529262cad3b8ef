//! `gmail-relay oauth authorize`: getting a refresh token on a headless host.
//!
//! The authorization-code flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252): the
//! operator opens the printed consent URL in any browser, signs in, and Google redirects to
//! `http://127.0.0.1:<port>/` on the relay's host, where [`Authorization::wait_for_code`]
//! listens. When the browser runs on another machine, that redirect fails to load there; the
//! operator then pastes the URL from the browser's address bar (or just the code), and the
//! same function takes it from the `pasted` channel. The code is exchanged for a refresh token,
//! which the caller stores (mode 0600).

use std::io;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::Secret;
use super::oauth2::{GMAIL_SCOPE, TokenError, client_secret, post_form, refresh_refusal};
use crate::config::OAuth2Config;

/// Why authorization did not complete.
#[derive(Debug, thiserror::Error)]
pub enum AuthorizeError {
    /// The loopback listener could not be opened.
    #[error("cannot listen for the redirect on 127.0.0.1: {0}")]
    Listen(io::Error),
    /// Google (or the operator) refused consent.
    #[error("authorization refused: {0}")]
    Refused(String),
    /// What came back does not belong to this authorization (a replayed or forged redirect).
    #[error("the redirect's state does not match this authorization; start again")]
    StateMismatch,
    /// The code could not be exchanged.
    #[error("exchanging the code failed: {0}")]
    Exchange(#[from] TokenError),
    /// The exchange succeeded but gave no refresh token.
    #[error(
        "Google returned no refresh token; revoke the app's access at \
         https://myaccount.google.com/permissions and authorize again"
    )]
    NoRefreshToken,
    /// Nothing arrived (stdin closed and no redirect).
    #[error("no authorization code received")]
    NoCode,
}

/// One authorization in progress.
pub struct Authorization {
    /// The consent URL to open in a browser.
    pub url: String,
    /// Where Google sends the browser back to.
    pub redirect_uri: String,
    verifier: String,
    state: String,
    listener: TcpListener,
}

fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator works");
    B64URL.encode(buf)
}

/// Starts an authorization: listens on a loopback port and builds the consent URL.
pub async fn begin(
    settings: &OAuth2Config,
    login_hint: &str,
) -> Result<Authorization, AuthorizeError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(AuthorizeError::Listen)?;
    let port = listener
        .local_addr()
        .map_err(AuthorizeError::Listen)?
        .port();
    let redirect_uri = format!("http://127.0.0.1:{port}/");
    let verifier = random_token(48);
    let challenge = B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    let state = random_token(16);
    let mut url = url::Url::parse(&settings.auth_url)
        .map_err(|e| AuthorizeError::Refused(format!("upstream.oauth2.auth_url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("client_id", &settings.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", GMAIL_SCOPE)
        .append_pair("access_type", "offline")
        .append_pair("prompt", "consent")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &state)
        .append_pair("login_hint", login_hint);
    Ok(Authorization {
        url: url.into(),
        redirect_uri,
        verifier,
        state,
        listener,
    })
}

/// What a redirect or a pasted text says.
enum Answer {
    Code(String),
    Error(String),
    Nothing,
}

impl Authorization {
    /// Reads a code out of a redirect query or pasted text, checking the state when present.
    fn parse(&self, text: &str) -> Result<Answer, AuthorizeError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Answer::Nothing);
        }
        let query = match text.split_once('?') {
            Some((_, q)) => q,
            None if text.contains("code=") || text.contains("error=") => text,
            // A bare code, pasted from Google's page.
            None => return Ok(Answer::Code(text.to_owned())),
        };
        let mut code = None;
        let mut state = None;
        let mut error = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "code" => code = Some(v.into_owned()),
                "state" => state = Some(v.into_owned()),
                "error" => error = Some(v.into_owned()),
                _ => {}
            }
        }
        if let Some(s) = state
            && s != self.state
        {
            return Err(AuthorizeError::StateMismatch);
        }
        Ok(match (code, error) {
            (_, Some(e)) => Answer::Error(e),
            (Some(c), None) => Answer::Code(c),
            (None, None) => Answer::Nothing,
        })
    }

    /// Waits for the code: from the browser's redirect to the loopback listener, or from a
    /// line the operator pastes (sent on `pasted`).
    pub async fn wait_for_code(
        &self,
        mut pasted: mpsc::Receiver<String>,
    ) -> Result<String, AuthorizeError> {
        let mut stdin_open = true;
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let Ok((mut sock, _)) = accepted else { continue };
                    let target = read_request_target(&mut sock).await.unwrap_or_default();
                    let answer = self.parse(&target);
                    let page = match &answer {
                        Ok(Answer::Code(_)) => "gmail-relay is authorized. You can close this tab.",
                        Ok(Answer::Error(_)) => "Authorization was refused. See the terminal.",
                        Ok(Answer::Nothing) => "Waiting for Google's redirect.",
                        Err(_) => "This redirect does not belong to the running authorization.",
                    };
                    let _ = sock.write_all(format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    ).as_bytes()).await;
                    match answer? {
                        Answer::Code(c) => return Ok(c),
                        Answer::Error(e) => return Err(AuthorizeError::Refused(e)),
                        Answer::Nothing => {}
                    }
                }
                line = pasted.recv(), if stdin_open => match line {
                    Some(line) => match self.parse(&line)? {
                        Answer::Code(c) => return Ok(c),
                        Answer::Error(e) => return Err(AuthorizeError::Refused(e)),
                        Answer::Nothing => {}
                    },
                    None => stdin_open = false,
                },
            }
        }
    }

    /// Exchanges the code for a refresh token.
    pub async fn exchange(
        &self,
        settings: &OAuth2Config,
        http: &reqwest::Client,
        code: &str,
    ) -> Result<Secret, AuthorizeError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("client_id", settings.client_id.clone()),
            ("code_verifier", self.verifier.clone()),
        ];
        if let Some(secret) = client_secret(settings)? {
            form.push(("client_secret", secret.expose().to_owned()));
        }
        let reply = post_form(http, &settings.token_url, &form)
            .await
            .map_err(|r| refresh_refusal(r, &settings.section))?;
        reply
            .refresh_token
            .map(Secret::new)
            .ok_or(AuthorizeError::NoRefreshToken)
    }
}

/// The target of an HTTP request (`/?code=...`), from its request line.
async fn read_request_target(sock: &mut tokio::net::TcpStream) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned())
}
