//! The token source against a fake token endpoint on loopback.

use std::collections::VecDeque;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A token endpoint: answers from a script, then with fresh tokens `tok-N` (3600 s).
struct Endpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    bodies: Arc<StdMutex<Vec<String>>>,
    script: Arc<StdMutex<VecDeque<(u16, String)>>>,
}

async fn endpoint() -> Endpoint {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(StdMutex::new(Vec::new()));
    let script: Arc<StdMutex<VecDeque<(u16, String)>>> = Arc::default();
    let (r, b, s) = (requests.clone(), bodies.clone(), script.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (r, b, s) = (r.clone(), b.clone(), s.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break text[end + 4..end + 4 + len].to_string();
                        }
                    }
                };
                let n = r.fetch_add(1, Ordering::SeqCst) + 1;
                b.lock().unwrap().push(body);
                let (status, reply) = s.lock().unwrap().pop_front().unwrap_or((
                    200,
                    format!("{{\"access_token\":\"tok-{n}\",\"expires_in\":3600,\"token_type\":\"Bearer\"}}"),
                ));
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    Endpoint {
        url,
        requests,
        bodies,
        script,
    }
}

fn source(url: &str, refresh_token: SecretSource) -> TokenSource {
    TokenSource::new(OAuth2Config {
        client_id: "cid".into(),
        client_secret: Some(SecretSource::Inline(Secret::new("csecret"))),
        refresh_token,
        token_url: url.into(),
        auth_url: "http://127.0.0.1/auth".into(),
        refresh_before: Duration::from_secs(300),
        section: "upstream.oauth2".into(),
    })
}

#[tokio::test]
async fn the_first_token_is_fetched_once_and_cached() {
    let ep = endpoint().await;
    let s = source(&ep.url, SecretSource::Inline(Secret::new("1//refresh")));
    assert_eq!(s.token().await.unwrap().value.expose(), "tok-1");
    assert_eq!(s.token().await.unwrap().value.expose(), "tok-1");
    assert_eq!(ep.requests.load(Ordering::SeqCst), 1);
    let body = ep.bodies.lock().unwrap()[0].clone();
    for part in [
        "grant_type=refresh_token",
        "refresh_token=1%2F%2Frefresh",
        "client_id=cid",
        "client_secret=csecret",
    ] {
        assert!(body.contains(part), "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_about_to_expire_is_refreshed_once_for_many_callers() {
    let ep = endpoint().await;
    let s = source(&ep.url, SecretSource::Inline(Secret::new("r")));
    assert_eq!(s.token().await.unwrap().value.expose(), "tok-1");
    tokio::time::advance(Duration::from_secs(3600 - 299)).await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.token().await.unwrap().value.expose().to_owned() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), "tok-2", "refreshed before it expired");
    }
    assert_eq!(
        ep.requests.load(Ordering::SeqCst),
        2,
        "one refresh for ten callers"
    );
}

#[tokio::test(start_paused = true)]
async fn a_temporary_endpoint_failure_keeps_the_valid_token() {
    let ep = endpoint().await;
    let s = source(&ep.url, SecretSource::Inline(Secret::new("r")));
    s.token().await.unwrap();
    ep.script.lock().unwrap().push_back((503, "{}".into()));
    tokio::time::advance(Duration::from_secs(3600 - 200)).await;
    assert_eq!(
        s.token().await.unwrap().value.expose(),
        "tok-1",
        "still valid: used"
    );
    assert_eq!(
        s.token().await.unwrap().value.expose(),
        "tok-1",
        "no retry before the backoff"
    );
    assert_eq!(ep.requests.load(Ordering::SeqCst), 2);
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(
        s.token().await.unwrap().value.expose(),
        "tok-3",
        "retried after the backoff"
    );
}

#[tokio::test]
async fn invalid_grant_is_rejected_with_advice() {
    let ep = endpoint().await;
    ep.script.lock().unwrap().push_back((
        400,
        "{\"error\":\"invalid_grant\",\"error_description\":\"Token has been expired or revoked.\"}".into(),
    ));
    let s = source(&ep.url, SecretSource::Inline(Secret::new("r")));
    let err = s.token().await.unwrap_err();
    let TokenError::Rejected(text) = &err else {
        panic!("{err:?}")
    };
    assert!(
        text.contains("invalid_grant")
            && text.contains("gmail-relay oauth authorize")
            && text.contains("7 days"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_without_a_token_is_unavailable() {
    let s = source(
        "http://127.0.0.1:9/token",
        SecretSource::Inline(Secret::new("r")),
    );
    assert!(matches!(s.token().await, Err(TokenError::Unavailable(_))));
}

#[tokio::test]
async fn a_refresh_token_file_is_reread_and_a_new_one_written_back() {
    let ep = endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("refresh-token");
    std::fs::write(&file, "1//first\n").unwrap();
    ep.script.lock().unwrap().push_back((
        200,
        "{\"access_token\":\"a\",\"expires_in\":3600,\"refresh_token\":\"1//rotated\"}".into(),
    ));
    let s = source(&ep.url, SecretSource::File(file.clone()));
    s.token().await.unwrap();
    assert!(ep.bodies.lock().unwrap()[0].contains("refresh_token=1%2F%2Ffirst"));
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), "1//rotated");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    s.invalidate(&Secret::new("a")).await;
    s.token().await.unwrap();
    assert!(
        ep.bodies.lock().unwrap()[1].contains("refresh_token=1%2F%2Frotated"),
        "read again"
    );
}

#[test]
fn the_xoauth2_response_has_the_documented_shape() {
    let r = xoauth2_response("me@gmail.com", &Secret::new("ya29.tok"));
    assert_eq!(r, "user=me@gmail.com\u{1}auth=Bearer ya29.tok\u{1}\u{1}");
}
