//! A fake Gmail API on loopback: HTTPS with a certificate from a test CA, HTTP/2 and HTTP/1.1
//! by ALPN (or HTTP/1.1 only), `users.messages.send` as a simple upload
//! (`uploadType=media`) and as a resumable one (a POST that opens a session, then a PUT of
//! the bytes), and `users.getProfile`. It checks the bearer token, records each upload's
//! bytes, query and HTTP version, counts TLS connections, and answers from a script first
//! (Google's JSON errors, `Retry-After`), then `200 {"id": ...}`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// A scripted answer: status, extra headers, JSON body.
pub type Reply = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
pub struct ApiScript {
    /// Answers to the next uploads (a simple POST, or a resumable PUT), before the default.
    pub replies: VecDeque<Reply>,
    /// Bearer tokens answered with 401.
    pub rejected_tokens: HashSet<String>,
    /// Wait this long before every answer (a distant server).
    pub delay: Option<Duration>,
    /// The resumable session URI's origin, if not this server's own (a hostile answer).
    pub session_origin: Option<String>,
}

/// One upload the fake took.
#[derive(Debug, Clone)]
pub struct Upload {
    /// `media` or `resumable`.
    pub kind: &'static str,
    pub bytes: Vec<u8>,
    pub token: String,
    /// "HTTP/2.0" or "HTTP/1.1".
    pub http: String,
}

#[derive(Debug, Default)]
pub struct ApiRecord {
    /// TLS connections accepted.
    pub connections: usize,
    /// Every request: "METHOD path?query HTTP/x".
    pub requests: Vec<String>,
    /// Uploads answered 200.
    pub uploads: Vec<Upload>,
}

pub struct FakeGmailApi {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server certificate (`upstream.ca_file`).
    pub ca_file: PathBuf,
    pub script: Arc<Mutex<ApiScript>>,
    pub record: Arc<Mutex<ApiRecord>>,
    count: watch::Sender<usize>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGmailApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    script: Arc<Mutex<ApiScript>>,
    record: Arc<Mutex<ApiRecord>>,
    count: watch::Sender<usize>,
    /// Open resumable sessions: id → declared length.
    sessions: Mutex<HashMap<String, usize>>,
    origin: String,
}

impl FakeGmailApi {
    /// A fake offering HTTP/2 and HTTP/1.1.
    pub async fn start() -> FakeGmailApi {
        Self::start_with(&[b"h2", b"http/1.1"]).await
    }

    /// A fake whose ALPN offers exactly `alpn`.
    pub async fn start_with(alpn: &[&[u8]]) -> FakeGmailApi {
        let (config, ca_pem) = super::certs::server_config(&["127.0.0.1", "localhost"], alpn);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("api-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script: Arc<Mutex<ApiScript>> = Arc::default();
        let record: Arc<Mutex<ApiRecord>> = Arc::default();
        let count = watch::channel(0).0;
        let state = Arc::new(State {
            script: script.clone(),
            record: record.clone(),
            count: count.clone(),
            sessions: Mutex::default(),
            origin: format!("https://{addr}"),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    state.record.lock().unwrap().connections += 1;
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        FakeGmailApi {
            addr,
            ca_file,
            script,
            record,
            count,
            _dir: dir,
            task,
        }
    }

    /// The `api_url` to configure.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.record.lock().unwrap().uploads.clone()
    }

    pub fn connections(&self) -> usize {
        self.record.lock().unwrap().connections
    }

    pub fn requests(&self) -> Vec<String> {
        self.record.lock().unwrap().requests.clone()
    }

    /// Waits until `n` uploads were taken (panics after `limit`).
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Upload> {
        let mut rx = self.count.subscribe();
        let reached = tokio::time::timeout(limit, rx.wait_for(|&c| c >= n)).await;
        assert!(
            reached.is_ok(),
            "expected {n} uploads at the fake Gmail API within {limit:?}; got {}; requests: {:?}",
            self.uploads().len(),
            self.requests()
        );
        self.uploads()
    }
}

fn reply(status: u16, headers: &[(&str, String)], body: String) -> Response<Full<Bytes>> {
    let mut r = Response::builder()
        .status(status)
        .header("Content-Type", "application/json; charset=UTF-8");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body))).unwrap()
}

fn error(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": code, "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}]}});
    reply(code, &[], body.to_string())
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let delay = state.script.lock().unwrap().delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let http = format!("{:?}", req.version());
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let token = header("authorization")
        .and_then(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        .unwrap_or_default();
    let declared = header("x-upload-content-length").and_then(|l| l.parse::<usize>().ok());
    state
        .record
        .lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}?{query} {http}"));
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "badRequest", "unreadable body"),
    };
    if token.is_empty()
        || state
            .script
            .lock()
            .unwrap()
            .rejected_tokens
            .contains(&token)
    {
        return error(401, "authError", "Invalid Credentials");
    }
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let send_path = "/upload/gmail/v1/users/me/messages/send";
    match (method.as_str(), path.as_str(), param("uploadType").as_deref()) {
        ("GET", "/gmail/v1/users/me/profile", _) => reply(
            200,
            &[],
            r#"{"emailAddress":"relay@example.com","messagesTotal":42,"threadsTotal":40,"historyId":"1"}"#.into(),
        ),
        ("POST", p, Some("media")) if p == send_path => upload(state, "media", body, token, http),
        ("POST", p, Some("resumable")) if p == send_path => {
            let Some(length) = declared else {
                return error(400, "badRequest", "X-Upload-Content-Length required");
            };
            let id = format!("up-{}", state.sessions.lock().unwrap().len() + 1);
            state.sessions.lock().unwrap().insert(id.clone(), length);
            let origin = state
                .script
                .lock()
                .unwrap()
                .session_origin
                .clone()
                .unwrap_or_else(|| state.origin.clone());
            let location = format!("{origin}{send_path}?uploadType=resumable&upload_id={id}");
            reply(200, &[("Location", location)], String::new())
        }
        ("PUT", p, Some("resumable")) if p == send_path => {
            let id = param("upload_id").unwrap_or_default();
            let Some(length) = state.sessions.lock().unwrap().remove(&id) else {
                return error(404, "notFound", "no such upload session");
            };
            if length != body.len() {
                return error(400, "badRequest", "the upload is not the declared length");
            }
            upload(state, "resumable", body, token, http)
        }
        _ => error(404, "notFound", "Not Found"),
    }
}

fn upload(
    state: &State,
    kind: &'static str,
    body: Bytes,
    token: String,
    http: String,
) -> Response<Full<Bytes>> {
    if let Some((status, headers, body)) = state.script.lock().unwrap().replies.pop_front() {
        return reply(status, &headers, body);
    }
    let n = {
        let mut r = state.record.lock().unwrap();
        r.uploads.push(Upload {
            kind,
            bytes: body.to_vec(),
            token,
            http,
        });
        r.uploads.len()
    };
    state.count.send_replace(n);
    reply(
        200,
        &[],
        format!(r#"{{"id":"18c{n:05x}","threadId":"18c{n:05x}","labelIds":["SENT"]}}"#),
    )
}
