//! Test harness: the relay started in process on port 0 with a temporary spool, pointed at a
//! [`upstream::FakeUpstream`], and a small raw SMTP client.

#![allow(dead_code)]

pub mod certs;
pub mod dialog;
pub mod gmail_api;
pub mod logs;
pub mod redis;
pub mod service_key;
pub mod token;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gmail_relay::daemon::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use upstream::{FakeUpstream, Mode, PASSWORD, USER};

/// Long enough for anything a test waits for; short enough that a hang fails the test.
pub const WAIT: Duration = Duration::from_secs(20);

/// A relay running in this process.
pub struct TestRelay {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub env: HashMap<String, String>,
    daemon: Option<Daemon>,
}

/// A free port on loopback (bound and released; the relay binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The config text for a relay forwarding to `up` (trusting its CA), with fast retries.
pub fn config_for(up: &FakeUpstream, extra: &str) -> String {
    let tls = match up.mode {
        Mode::StartTls => "starttls",
        Mode::Implicit => "implicit",
    };
    format!(
        r#"
[listen]
addrs = ["127.0.0.1:0"]
hostname = "relay.test"

[queue]
dir = "spool"
retry_min = "100ms"
retry_max = "400ms"

[upstream]
host = "127.0.0.1"
port = {port}
tls = "{tls}"
username = "{USER}"
ca_file = "{ca}"
helo_name = "relay.test"
timeout = "5s"
{extra}
"#,
        port = up.addr.port(),
        ca = up.ca_file.display(),
    )
}

/// `config` with retries an hour apart: a deferred message stays put unless the test moves it.
pub fn slow_retries(config: &str) -> String {
    config
        .replace("retry_min = \"100ms\"", "retry_min = \"1h\"")
        .replace("retry_max = \"400ms\"", "retry_max = \"2h\"")
}

/// Writes `config` into `dir` with its listener on a fixed free loopback port (the real binary
/// cannot tell a test which port 0 became); returns the file and the address.
pub fn fixed_port_config(dir: &Path, config: &str) -> (PathBuf, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let path = dir.join("relay.toml");
    std::fs::write(&path, config.replace("127.0.0.1:0", &addr.to_string())).unwrap();
    (path, addr)
}

/// The relay binary serving `config`, the upstream password from the environment, its log
/// (`RUST_LOG`, default the config's level) into `log`.
pub fn spawn_relay(
    config: &Path,
    log: std::fs::File,
    rust_log: Option<&str>,
) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"));
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .env("GMAIL_RELAY__UPSTREAM__PASSWORD", PASSWORD)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Some(level) = rust_log {
        cmd.env("RUST_LOG", level);
    }
    cmd.spawn().unwrap()
}

/// The config text for a relay that only queues (`delivery.hold`): for intake tests, which
/// need no upstream. `listen_extra` is added to the `[listen]` section.
pub fn intake_config(listen_extra: &str) -> String {
    format!(
        r#"
[listen]
addrs = ["127.0.0.1:0"]
hostname = "relay.test"
{listen_extra}

[queue]
dir = "spool"

[upstream]
host = "127.0.0.1"
port = 9
username = "{USER}"

[delivery]
hold = true
"#
    )
}

impl TestRelay {
    /// Writes `config` (TOML) and starts the relay; the password comes from the environment
    /// map, as an operator would pass it.
    pub async fn start(config: &str) -> TestRelay {
        let env = HashMap::from([(
            "GMAIL_RELAY__UPSTREAM__PASSWORD".to_string(),
            PASSWORD.to_string(),
        )]);
        Self::start_with_env(config, env).await
    }

    /// Like [`TestRelay::start`], with exactly these environment overrides.
    pub async fn start_with_env(config: &str, env: HashMap<String, String>) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let mut relay = TestRelay {
            dir,
            config: path,
            env,
            daemon: None,
        };
        relay.boot().await;
        relay
    }

    async fn boot(&mut self) {
        let cfg = gmail_relay::config::load_with_env(&self.config, Some(self.env.clone())).unwrap();
        self.daemon = Some(Daemon::start(cfg).await.unwrap());
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs()[0]
    }

    /// Every bound listener: `addrs`, then `no_starttls_addrs`, then `implicit_tls_addrs`.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.daemon.as_ref().unwrap().local_addrs().to_vec()
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Files in a spool subdirectory (`queue`, `failed`, `tmp`).
    pub fn files(&self, sub: &str) -> Vec<String> {
        list(&self.spool().join(sub))
    }

    pub async fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.shutdown(Duration::from_secs(5)).await;
        }
    }

    /// Stops and starts again on the same spool and config.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
    }

    /// Messages in the queue (message files; state files are not counted).
    pub fn queued(&self) -> usize {
        self.files("queue")
            .iter()
            .filter(|f| f.ends_with(".msg"))
            .count()
    }

    /// Every queued message: (sender, recipients, body as stored), oldest first.
    pub fn stored(&self) -> Vec<(String, Vec<String>, Vec<u8>)> {
        self.files("queue")
            .iter()
            .filter(|f| f.ends_with(".msg"))
            .map(|f| {
                let bytes = std::fs::read(self.spool().join("queue").join(f)).unwrap();
                let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
                let header: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
                let env = &header["envelope"];
                let rcpts = env["recipients"].as_array().unwrap();
                (
                    env["sender"].as_str().unwrap().to_string(),
                    rcpts
                        .iter()
                        .map(|r| r.as_str().unwrap().to_string())
                        .collect(),
                    bytes[nl + 1..].to_vec(),
                )
            })
            .collect()
    }

    /// Waits (bounded) until the queue directory is empty.
    pub async fn wait_queue_empty(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.files("queue").is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue not empty: {:?}",
                self.files("queue")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A raw SMTP client: sends lines, reads replies.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads one complete (possibly multi-line) reply; returns its last line.
    pub async fn reply(&mut self) -> String {
        loop {
            if let Some(end) = self.complete_reply() {
                let bytes: Vec<u8> = self.buf.drain(..end).collect();
                let text = String::from_utf8_lossy(&bytes).to_string();
                return text.trim_end().rsplit("\r\n").next().unwrap().to_string();
            }
            if !self.fill().await {
                return String::new();
            }
        }
    }

    /// Reads one line of a reply (without CRLF).
    pub async fn reply_line(&mut self) -> String {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8_lossy(&line[..pos]).to_string();
            }
            if !self.fill().await {
                return String::new();
            }
        }
    }

    /// Reads more from the relay; false when it closed the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("reply timed out")
            .unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    fn complete_reply(&self) -> Option<usize> {
        let mut start = 0;
        while let Some(pos) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
            let line = &self.buf[start..start + pos];
            start += pos + 2;
            if line.len() < 4 || line[3] == b' ' {
                return Some(start);
            }
        }
        None
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one command line and returns the reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }
}

/// Submits one message over raw SMTP; returns the final reply to the DATA.
pub async fn submit(addr: SocketAddr, from: &str, to: &[&str], body: &[u8]) -> String {
    let mut c = Client::connect(addr).await;
    assert!(c.reply().await.starts_with("220"));
    assert!(c.cmd("EHLO client.test").await.starts_with("250"));
    assert!(
        c.cmd(&format!("MAIL FROM:<{from}>"))
            .await
            .starts_with("250")
    );
    for rcpt in to {
        assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).await.starts_with("250"));
    }
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(body).await;
    c.send(b".\r\n").await;
    let reply = c.reply().await;
    c.cmd("QUIT").await;
    reply
}

/// The message as the relay stored and forwarded it, minus its own `Received:` header.
pub fn without_trace_header(data: &[u8]) -> &[u8] {
    assert!(
        data.starts_with(b"Received: from "),
        "relay adds its trace header first"
    );
    let mut i = 0;
    loop {
        let nl = data[i..].windows(2).position(|w| w == b"\r\n").unwrap() + i + 2;
        if data.get(nl) != Some(&b'\t') && data.get(nl) != Some(&b' ') {
            return &data[nl..];
        }
        i = nl;
    }
}

/// Waits (bounded by [`WAIT`]) until `cond` holds, checking every 20 ms.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the binary printed and its exit code.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The standard output as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} / {}", self.stdout, self.stderr))
    }
}

/// Runs the `gmail-relay` binary off the runtime's thread (the in-process relay keeps
/// serving meanwhile), with no `GMAIL_RELAY*` variables but `env`, and `stdin` as input.
pub async fn run_binary(args: Vec<String>, env: Vec<(String, String)>, stdin: Vec<u8>) -> Run {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_gmail-relay"));
        cmd.args(&args).env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if k.starts_with("GMAIL_RELAY") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(&stdin);
        drop(input);
        let out = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

impl TestRelay {
    /// `gmail-relay queue --config <this relay's config> <args>`.
    pub async fn queue(&self, args: &[&str]) -> Run {
        self.tool("queue", args).await
    }

    /// The ids in the queue directory, oldest first.
    pub fn queued_ids(&self) -> Vec<String> {
        self.files("queue")
            .iter()
            .filter_map(|f| f.strip_suffix(".msg").map(str::to_owned))
            .collect()
    }

    /// The ids in the failed area, oldest first.
    pub fn failed_ids(&self) -> Vec<String> {
        self.files("failed")
            .iter()
            .filter_map(|f| f.strip_suffix(".msg").map(str::to_owned))
            .collect()
    }
}

/// The upstream password as the binary's environment, as an operator would pass it.
pub fn password_env() -> Vec<(String, String)> {
    vec![(
        "GMAIL_RELAY__UPSTREAM__PASSWORD".to_owned(),
        PASSWORD.to_owned(),
    )]
}

/// A short message every test may send.
pub const MSG: &[u8] = b"Subject: test\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <t@app.test>\r\n\r\nbody\r\n";

/// Submits [`MSG`] from `app@example.com` to `to` and checks it was queued.
pub async fn send(relay: &TestRelay, to: &str) {
    let reply = submit(relay.addr(), "app@example.com", &[to], MSG).await;
    assert!(reply.starts_with("250 2.0.0"), "{reply}");
}

/// `gmail-relay check --upstream` on a config file with this text (the password from the
/// environment): logs in without sending.
pub async fn check_upstream(config: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, config).unwrap();
    check_file(&path, &["--upstream"], password_env()).await
}

/// `gmail-relay check --config PATH`, then `extra` arguments, with `env`.
pub async fn check_file(path: &Path, extra: &[&str], env: Vec<(String, String)>) -> Run {
    let mut args = vec!["check".to_owned(), "--config".to_owned()];
    args.push(path.display().to_string());
    args.extend(extra.iter().map(|a| a.to_string()));
    run_binary(args, env, vec![]).await
}

impl TestRelay {
    /// Starts the relay, then rewrites its config file with the ports it bound (listener, then
    /// metrics), so that the binary's local tools (`queue`, `health`, `send-test`) find it.
    pub async fn start_for_tools(config: &str) -> TestRelay {
        let env = HashMap::from([(
            "GMAIL_RELAY__UPSTREAM__PASSWORD".to_string(),
            PASSWORD.to_string(),
        )]);
        Self::start_for_tools_with_env(config, env).await
    }

    /// Like [`TestRelay::start_for_tools`], with exactly these environment overrides.
    pub async fn start_for_tools_with_env(config: &str, env: HashMap<String, String>) -> TestRelay {
        let relay = TestRelay::start_with_env(config, env).await;
        let mut bound = config.replacen("127.0.0.1:0", &relay.addr().to_string(), 1);
        if let Some(metrics) = relay.metrics_addr() {
            bound = bound.replacen("127.0.0.1:0", &metrics.to_string(), 1);
        }
        std::fs::write(&relay.config, bound).unwrap();
        relay
    }

    /// `gmail-relay <command> --config <this relay's config> <args>`.
    pub async fn tool(&self, command: &str, args: &[&str]) -> Run {
        let mut all = vec![
            command.to_owned(),
            "--config".to_owned(),
            self.config.display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        run_binary(all, vec![], vec![]).await
    }

    /// The health/metrics endpoint, when `metrics.addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.daemon.as_ref().unwrap().metrics_addr()
    }

    /// `GET /healthz`'s document (needs `metrics.addr`).
    pub async fn health(&self) -> serde_json::Value {
        let (_, body) = http_get(self.metrics_addr().expect("metrics.addr"), "/healthz").await;
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// The first line of `GET /metrics` that starts with `line_start`, or "" (needs
    /// `metrics.addr`).
    pub async fn metric(&self, line_start: &str) -> String {
        let (_, scrape) = http_get(self.metrics_addr().expect("metrics.addr"), "/metrics").await;
        scrape
            .lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or("")
            .to_owned()
    }

    /// Loads the config file again (with `self.env`) and puts it in force, as SIGHUP does.
    pub fn reload(&self) -> Result<Vec<&'static str>, String> {
        let cfg = gmail_relay::config::load_with_env(&self.config, Some(self.env.clone()))
            .map_err(|e| e.to_string())?;
        self.daemon
            .as_ref()
            .unwrap()
            .reload(cfg)
            .map_err(|e| e.to_string())
    }
}

/// `GET path` over HTTP/1.1: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}
