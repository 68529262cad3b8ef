//! A fake OAuth2 token endpoint (Google's) on loopback, plain HTTP: refresh-token grants give
//! `tok-N` access tokens; refresh tokens in `rejected` get `invalid_grant`; scripted replies
//! come first. Authorization-code grants give the refresh token `1//from-code`.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

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
}

pub struct TokenEndpoint {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    /// Every request body (form-encoded), in order.
    pub requests: Arc<Mutex<Vec<String>>>,
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
        let (s, r) = (script.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let Some(body) = read_request(&mut sock).await else {
                        return;
                    };
                    let (status, reply) = answer(&s, &r, body);
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

fn answer(script: &Mutex<Script>, requests: &Mutex<Vec<String>>, body: String) -> (u16, String) {
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
            format!(r#"{{"access_token":"tok-{n}","expires_in":{expires},"token_type":"Bearer"}}"#),
        ),
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
