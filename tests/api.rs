//! The Gmail API transport end to end: the relay (intake, spool, scheduler as for SMTP)
//! uploads to a fake Gmail API over HTTPS (HTTP/2 or HTTP/1.1, a test CA) with tokens from
//! the fake token endpoint. Envelope and headers, every row of the outcome table, simple and
//! resumable uploads, the size limit, connection reuse, an API that cannot be reached or
//! answers too late, `check --upstream`, and failover from an SMTP account.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::gmail_api::{FakeGmailApi, Reply};
use common::token::TokenEndpoint;
use common::upstream::{FakeUpstream, Mode, PASSWORD, Script, USER};
use common::{TestRelay, WAIT, eventually, submit, without_trace_header};

const MSG: &[u8] = b"From: App <app@example.com>\r\nTo: a@example.com\r\nSubject: api\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <api@app.test>\r\n\r\nbody\r\n";

struct Setup {
    api: FakeGmailApi,
    ep: TokenEndpoint,
    relay: TestRelay,
}

/// The relay config for `api` (and `ep`); `big` raises the intake's size limit above the
/// API's.
fn config(api: &FakeGmailApi, ep: &TokenEndpoint, upstream_extra: &str, big: bool) -> String {
    format!(
        r#"
[listen]
addrs = ["127.0.0.1:0"]
hostname = "relay.test"
{listen_extra}
[queue]
dir = "spool"
retry_min = "100ms"
retry_max = "400ms"

[upstream]
transport = "api"
api_url = "{url}"
ca_file = "{ca}"
username = "relay@example.com"
auth = "xoauth2"
timeout = "10s"
{upstream_extra}

[upstream.oauth2]
client_id = "cid.apps.googleusercontent.com"
client_secret = "csecret"
refresh_token = "1//good"
token_url = "{token}"

[delivery]
auth_pause_min = "100ms"
auth_pause_max = "300ms"
quota_pause = "300ms"

[metrics]
addr = "127.0.0.1:0"
"#,
        listen_extra = if big {
            "max_message_size = 40000000"
        } else {
            ""
        },
        url = api.url(),
        ca = api.ca_file.display(),
        token = ep.url(),
    )
}

async fn start_with(api: FakeGmailApi, upstream_extra: &str, big: bool) -> Setup {
    let ep = TokenEndpoint::start().await;
    let cfg = config(&api, &ep, upstream_extra, big);
    let relay = TestRelay::start_for_tools_with_env(&cfg, HashMap::new()).await;
    Setup { api, ep, relay }
}

async fn start() -> Setup {
    start_with(FakeGmailApi::start().await, "", false).await
}

async fn send(relay: &TestRelay, to: &[&str], body: &[u8]) {
    let reply = submit(relay.addr(), "app@example.com", to, body).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn the_message_arrives_as_queued_with_envelope_only_recipients_in_bcc() {
    let mut s = start().await;
    send(&s.relay, &["a@example.com", "hidden@example.net"], MSG).await;
    let got = s.api.wait_for(1, WAIT).await;
    s.relay.wait_queue_empty().await;
    let upload = &got[0];
    assert_eq!(upload.kind, "media");
    assert_eq!(upload.http, "HTTP/2.0", "HTTP/2 when the server offers it");
    assert_eq!(upload.token, "tok-1");
    let rest = upload
        .bytes
        .strip_prefix(b"Bcc: hidden@example.net\r\n".as_slice())
        .unwrap_or_else(|| {
            panic!(
                "the envelope-only recipient in Bcc: {}",
                text(&upload.bytes)
            )
        });
    assert_eq!(
        without_trace_header(rest),
        MSG,
        "otherwise byte-identical to what the client sent"
    );
    // The Gmail message id is the reply, in the log and in the metrics' transport label.
    let (_, scrape) = common::http_get(s.relay.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        scrape.contains(
            "gmail_relay_upstream_transactions_total{account=\"default\",transport=\"api\",http=\"HTTP/2\"} 1"
        ),
        "{scrape}"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn header_recipients_that_are_not_envelope_recipients_are_not_sent_to() {
    // `sendmail` with explicit recipients: the headers name a list the envelope does not.
    let mut s = start().await;
    let msg = b"From: app@example.com\r\nTo: a@example.com\r\nCc: team@lists.example.com\r\nSubject: s\r\n\r\nbody\r\n";
    send(&s.relay, &["a@example.com"], msg).await;
    let got = s.api.wait_for(1, WAIT).await;
    s.relay.wait_queue_empty().await;
    let uploaded = text(without_trace_header(&got[0].bytes));
    assert!(
        uploaded.contains("\r\nTo: a@example.com\r\n")
            && uploaded.contains("\r\nX-Gmail-Relay-Original-Cc: team@lists.example.com\r\n")
            && !uploaded.contains("\r\nCc:")
            && !uploaded.contains("Bcc:"),
        "{uploaded}"
    );
    s.relay.stop().await;
}

/// The relay with one scripted answer to the first upload; returns it after the message left
/// the queue or `settled` became true.
async fn with_first_answer(reply: Reply, settled: impl Fn(&Setup) -> bool) -> Setup {
    let api = FakeGmailApi::start().await;
    api.script.lock().unwrap().replies.push_back(reply);
    let s = start_with(api, "", false).await;
    send(&s.relay, &["a@example.com"], MSG).await;
    eventually("the outcome", || settled(&s)).await;
    s
}

fn google(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({"error": {"code": code, "message": message, "status": "X",
        "errors": [{"message": message, "domain": "global", "reason": reason}]}})
    .to_string()
}

async fn health(s: &Setup) -> String {
    let run = s.relay.tool("health", &[]).await;
    format!("{}{}", run.stdout, run.stderr)
}

#[tokio::test]
async fn a_401_refreshes_the_token_once_and_the_upload_goes_through() {
    let api = FakeGmailApi::start().await;
    api.script
        .lock()
        .unwrap()
        .rejected_tokens
        .insert("tok-1".into());
    let mut s = start_with(api, "", false).await;
    send(&s.relay, &["a@example.com"], MSG).await;
    let got = s.api.wait_for(1, WAIT).await;
    assert_eq!(got[0].token, "tok-2", "a fresh token after the 401");
    assert_eq!(s.ep.count(), 2, "exactly one refresh");
    s.relay.wait_queue_empty().await;
    assert!(s.relay.files("failed").is_empty());

    // Refused again after the refresh: a credentials pause, nothing failed.
    s.api
        .script
        .lock()
        .unwrap()
        .rejected_tokens
        .extend((1..100).map(|n| format!("tok-{n}")));
    send(&s.relay, &["b@example.com"], MSG).await;
    eventually("paused", || s.ep.count() >= 4).await;
    let said = health(&s).await;
    assert!(
        said.contains("paused (credentials)") && said.contains("401"),
        "{said}"
    );
    assert!(s.relay.files("failed").is_empty());
    s.relay.stop().await;
}

#[tokio::test]
async fn the_outcome_table_end_to_end() {
    // Pauses: nothing fails, the message stays queued, health names the cause.
    let pauses: [(Reply, &str, &str); 4] = [
        (
            (
                403,
                vec![],
                google(
                    403,
                    "insufficientPermissions",
                    "Request had insufficient authentication scopes.",
                ),
            ),
            "paused (credentials)",
            "https://mail.google.com/",
        ),
        (
            (
                403,
                vec![],
                google(403, "dailyLimitExceeded", "Daily Limit Exceeded"),
            ),
            "paused (quota)",
            "dailyLimitExceeded",
        ),
        (
            (
                403,
                vec![],
                google(
                    403,
                    "accessNotConfigured",
                    "Gmail API has not been used in project 1234 before or it is disabled.",
                ),
            ),
            "paused (credentials)",
            "enable the Gmail API",
        ),
        (
            (
                429,
                vec![("Retry-After", "3600".into())],
                google(429, "rateLimitExceeded", "Too many requests"),
            ),
            "paused (rate)",
            "retry after",
        ),
    ];
    for (reply, cause, hint) in pauses {
        let mut s = with_first_answer(reply, |s| !s.api.requests().is_empty()).await;
        let mut said = String::new();
        for _ in 0..50 {
            said = health(&s).await;
            if said.contains(cause) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            said.contains(cause) && said.contains(hint),
            "{cause}: {said}"
        );
        assert!(
            s.relay.files("failed").is_empty(),
            "{cause}: nothing failed"
        );
        s.relay.stop().await;
    }

    // Permanent: the message fails with the API's words in the DSN (which goes by the API too).
    for (reply, words) in [
        (
            (
                400,
                vec![],
                google(400, "invalidArgument", "Invalid To header"),
            ),
            "invalidArgument: Invalid To header",
        ),
        (
            (413, vec![], String::new()),
            "larger than the Gmail API accepts",
        ),
    ] {
        let mut s = with_first_answer(reply, |s| !s.api.uploads().is_empty()).await;
        s.relay.wait_queue_empty().await;
        let dsn = &s.api.uploads()[0];
        let body = text(&dsn.bytes);
        assert!(
            body.contains("Final-Recipient: rfc822; a@example.com") && body.contains(words),
            "{words}: {body}"
        );
        assert_eq!(s.relay.files("failed").len(), 2);
        s.relay.stop().await;
    }

    // Temporary: retried, then delivered once.
    let mut s = with_first_answer((503, vec![], "backend error".into()), |s| {
        !s.api.uploads().is_empty()
    })
    .await;
    s.relay.wait_queue_empty().await;
    assert_eq!(s.api.uploads().len(), 1);
    assert!(s.relay.files("failed").is_empty());
    s.relay.stop().await;
}

#[tokio::test]
async fn a_429_waits_for_retry_after_then_delivers() {
    let api = FakeGmailApi::start().await;
    api.script.lock().unwrap().replies.push_back((
        429,
        vec![("Retry-After", "1".into())],
        google(429, "rateLimitExceeded", "Rate Limit Exceeded"),
    ));
    let mut s = start_with(api, "", false).await;
    let t0 = Instant::now();
    send(&s.relay, &["a@example.com"], MSG).await;
    s.api.wait_for(1, WAIT).await;
    let waited = t0.elapsed();
    s.relay.wait_queue_empty().await;
    assert!(
        waited >= Duration::from_millis(900),
        "the relay waited for Retry-After: {waited:?}"
    );
    assert_eq!(s.api.requests().len(), 2, "no attempt in between");
    assert!(
        s.relay.files("failed").is_empty(),
        "a rate limit is not a failure"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn large_messages_use_a_resumable_upload_and_too_large_ones_fail_without_one() {
    let mut s = start_with(FakeGmailApi::start().await, "", true).await;
    let mut big = MSG.to_vec();
    while big.len() < 6_000_000 {
        big.extend_from_slice(
            b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu\r\n",
        );
    }
    send(&s.relay, &["a@example.com"], &big).await;
    let got = s.api.wait_for(1, WAIT).await;
    assert_eq!(got[0].kind, "resumable");
    assert!(
        without_trace_header(&got[0].bytes) == &big[..],
        "byte-identical"
    );
    let requests = s.api.requests();
    assert!(
        requests[0]
            .starts_with("POST /upload/gmail/v1/users/me/messages/send?uploadType=resumable ")
            && requests[1].starts_with(
                "PUT /upload/gmail/v1/users/me/messages/send?uploadType=resumable&upload_id="
            ),
        "{requests:?}"
    );
    s.relay.wait_queue_empty().await;

    // 37 MB: over the API's 35 MiB (36,700,160 bytes), failed at once; only the DSN is
    // uploaded.
    while big.len() < 37_000_000 {
        big.extend_from_slice(&[b'x'; 998]);
        big.extend_from_slice(b"\r\n");
    }
    send(&s.relay, &["b@example.com"], &big).await;
    let got = s.api.wait_for(2, WAIT).await;
    s.relay.wait_queue_empty().await;
    let dsn = text(&got[1].bytes[..got[1].bytes.len().min(20_000)]);
    assert!(
        got[1].bytes.len() < 100_000 && dsn.contains("35 MiB") && dsn.contains("b@example.com"),
        "{dsn}"
    );
    assert_eq!(
        s.api.requests().len(),
        3,
        "no request for the 36 MB message"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn a_resumable_session_on_another_origin_is_not_followed() {
    let api = FakeGmailApi::start().await;
    // Another origin (host localhost, not 127.0.0.1) that answers: the same fake, so that a
    // PUT, were it followed, would be seen and the upload recorded.
    let elsewhere = format!("https://localhost:{}", api.addr.port());
    api.script.lock().unwrap().session_origin = Some(elsewhere.clone());
    let mut s = start_with(api, "", true).await;
    let mut big = MSG.to_vec();
    big.resize(6_000_000, b'x');
    big.extend_from_slice(b"\r\n");
    send(&s.relay, &["a@example.com"], &big).await;
    eventually("the session opened", || !s.api.requests().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(s.api.uploads().is_empty(), "the session was not followed");
    let requests = s.api.requests();
    assert!(
        requests.iter().all(|r| r.starts_with("POST ")),
        "sessions opened (the pause's probes open another), never a PUT: {requests:?}"
    );
    assert!(s.relay.files("failed").is_empty(), "kept, not failed");
    assert_eq!(s.relay.queued_ids().len(), 1);
    let status = s.relay.queue(&["status"]).await.stdout;
    assert!(
        status.contains(&elsewhere) && status.contains("upstream.api_url"),
        "{status}"
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn a_hundred_messages_share_one_tls_connection() {
    let mut s = start().await;
    for i in 0..100 {
        send(&s.relay, &[&format!("r{i}@example.com")], MSG).await;
    }
    s.api.wait_for(100, WAIT).await;
    s.relay.wait_queue_empty().await;
    assert_eq!(
        s.api.connections(),
        1,
        "HTTP/2: one connection for everything"
    );
    s.relay.stop().await;

    // HTTP/1.1 only: keep-alive, at most max_connections (2) connections.
    let mut s = start_with(FakeGmailApi::start_with(&[b"http/1.1"]).await, "", false).await;
    for i in 0..30 {
        send(&s.relay, &[&format!("r{i}@example.com")], MSG).await;
    }
    let got = s.api.wait_for(30, WAIT).await;
    s.relay.wait_queue_empty().await;
    assert!(got.iter().all(|u| u.http == "HTTP/1.1"));
    assert!(
        s.api.connections() <= 2,
        "{} connections",
        s.api.connections()
    );
    s.relay.stop().await;
}

#[tokio::test]
async fn check_upstream_proves_access_without_sending() {
    let api = FakeGmailApi::start().await;
    let ep = TokenEndpoint::start().await;
    let cfg = config(&api, &ep, "", false);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, &cfg).unwrap();
    let run = common::check_file(&path, &["--upstream"], vec![]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "upstream check: reached the Gmail API at {} over HTTP/2 as relay@example.com; the token grants: https://mail.google.com/",
            api.url()
        )),
        "{}",
        run.stdout
    );
    assert!(api.uploads().is_empty(), "nothing sent");
    assert_eq!(api.requests().len(), 1);

    // An app password cannot be used with the API: a config error that says why.
    let pw = cfg.replace("auth = \"xoauth2\"", "password = \"abcd\"");
    std::fs::write(&path, pw).unwrap();
    let run = common::check_file(&path, &[], vec![]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("upstream.transport")
            && run.stderr.contains("does not take app passwords")
            && run.stderr.contains("oauth authorize"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn an_smtp_account_out_of_quota_fails_over_to_an_api_account() {
    let up = FakeUpstream::start(
        Mode::StartTls,
        Script {
            quota_users: [USER.to_owned()].into(),
            ..Script::default()
        },
    )
    .await;
    let api = FakeGmailApi::start().await;
    let ep = TokenEndpoint::start().await;
    let cfg = format!(
        "{}failover = [\"api\"]\n\
         [accounts.api]\ntransport = \"api\"\napi_url = \"{}\"\nca_file = \"{}\"\n\
         username = \"relay@example.com\"\nauth = \"xoauth2\"\nsenders = []\n\
         [accounts.api.oauth2]\nclient_id = \"cid\"\nclient_secret = \"cs\"\nrefresh_token = \"1//good\"\ntoken_url = \"{}\"\n\
         [delivery]\nquota_pause = \"1h\"\n",
        common::config_for(&up, ""),
        api.url(),
        api.ca_file.display(),
        ep.url()
    );
    let env = HashMap::from([(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
        PASSWORD.to_owned(),
    )]);
    let mut relay = TestRelay::start_with_env(&cfg, env).await;
    send(&relay, &["a@example.com"], MSG).await;
    let got = api.wait_for(1, WAIT).await;
    relay.wait_queue_empty().await;
    assert!(
        up.messages().is_empty(),
        "Gmail refused it over SMTP (quota)"
    );
    assert_eq!(got[0].token, "tok-1", "sent by the API account");
    relay.stop().await;
}

/// The Gmail API cannot be reached (nothing listens at `api_url`): the account pauses
/// `unreachable` naming the URL, the message stays queued (never failed), and a reload that
/// points `api_url` at the API delivers it at once.
#[tokio::test]
async fn an_unreachable_api_pauses_keeps_the_mail_and_a_fixed_api_url_delivers_it() {
    let api = FakeGmailApi::start().await;
    let s = start_with(api, "", false).await;
    let nowhere = format!("https://127.0.0.1:{}", common::free_port());
    let good = std::fs::read_to_string(&s.relay.config).unwrap();
    std::fs::write(&s.relay.config, good.replace(&s.api.url(), &nowhere)).unwrap();
    s.relay.reload().unwrap();

    send(&s.relay, &["a@example.com"], MSG).await;
    let mut said = String::new();
    for _ in 0..100 {
        said = health(&s).await;
        if said.contains("unreachable") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        said.contains("paused (unreachable)")
            && said.contains(&format!("cannot reach the Gmail API at {nowhere}")),
        "{said}"
    );
    assert_eq!(s.relay.queued_ids().len(), 1, "kept");
    assert!(s.relay.failed_ids().is_empty(), "never failed for it");
    assert!(s.api.uploads().is_empty());

    std::fs::write(&s.relay.config, good).unwrap();
    s.relay.reload().unwrap();
    let got = s.api.wait_for(1, WAIT).await;
    assert_eq!(got.len(), 1);
    s.relay.wait_queue_empty().await;
    assert!(s.relay.failed_ids().is_empty());
}

/// The API takes the upload but answers later than `upstream.timeout`: the message may have
/// gone, so it is deferred to be tried again (at least once, never lost), not failed and not a
/// pause; tried again once the API answers in time, it leaves the queue.
#[tokio::test]
async fn an_api_that_answers_too_late_defers_the_message_and_the_next_try_delivers_it() {
    let api = FakeGmailApi::start().await;
    api.script.lock().unwrap().delay = Some(Duration::from_secs(3));
    let ep = TokenEndpoint::start().await;
    // Retries an hour apart: the message rests deferred after the first try (with retries
    // 100 ms apart it would be "active" again most of the time) until `queue retry`.
    let cfg = common::slow_retries(&config(&api, &ep, "", false))
        .replace("timeout = \"10s\"", "timeout = \"1s\"");
    let relay = TestRelay::start_for_tools_with_env(&cfg, HashMap::new()).await;
    send(&relay, &["a@example.com"], MSG).await;

    let mut shown = serde_json::Value::Null;
    for _ in 0..200 {
        let run = relay.queue(&["list", "--json"]).await;
        shown = run.json();
        let reply = shown["messages"][0]["recipients"][0]["reply"]
            .as_str()
            .unwrap_or("");
        // The attempt writes the reply a moment before the scheduler hears its report and
        // shows it "deferred": wait for both.
        if reply.contains("did not answer") && shown["messages"][0]["state"] == "deferred" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = &shown["messages"][0];
    assert_eq!(m["state"], "deferred", "{shown}");
    assert!(
        m["recipients"][0]["reply"]
            .as_str()
            .unwrap()
            .contains(&format!("the Gmail API at {} did not answer", api.url())),
        "{shown}"
    );
    assert!(relay.failed_ids().is_empty());
    assert!(shown["status"]["accounts"][0]["pause"].is_null(), "{shown}");

    api.script.lock().unwrap().delay = None;
    let id = relay.queued_ids().pop().unwrap();
    let retry = relay.queue(&["retry", &id]).await;
    assert_eq!(retry.code, 0, "{retry:?}");
    relay.wait_queue_empty().await;
    assert!(relay.failed_ids().is_empty());
    assert!(!api.uploads().is_empty());
}
