//! A real `redis-server` for the tests, on a free loopback port with a temporary directory and
//! no persistence (so a restart loses its data, as Redis without persistence does). Where
//! `redis-server` is not installed the tests that need it are skipped with a note, unless
//! `GMAIL_RELAY_REQUIRE_REDIS` is set: CI installs it and sets that (`.ci/run`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Speaks TLS only (`--tls-port`), with this certificate and key (files in `dir`).
    tls: bool,
}

impl RedisServer {
    /// A fresh server on a free port, or `None` (the caller skips) where `redis-server` is
    /// not installed and `GMAIL_RELAY_REQUIRE_REDIS` is not set.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None)
    }

    /// A fresh server that speaks only TLS, with `certs`' leaf (for 127.0.0.1 and localhost).
    pub fn start_tls(certs: &super::certs::TestCerts) -> Option<RedisServer> {
        Self::start_with(Some(certs))
    }

    fn start_with(certs: Option<&super::certs::TestCerts>) -> Option<RedisServer> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !installed {
            assert!(
                std::env::var_os("GMAIL_RELAY_REQUIRE_REDIS").is_none(),
                "redis-server is required here: apt-get install redis-server"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        if let Some(c) = certs {
            std::fs::write(dir.path().join("cert.pem"), &c.cert_pem).unwrap();
            std::fs::write(dir.path().join("key.pem"), &c.key_pem).unwrap();
        }
        let mut server = RedisServer {
            port: super::free_port(),
            dir,
            child: None,
            tls: certs.is_some(),
        };
        server.restart();
        Some(server)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let file = |name: &str| self.dir.path().join(name).to_str().unwrap().to_owned();
        let listen: Vec<String> = if self.tls {
            [
                "--port",
                "0",
                "--tls-port",
                &port,
                "--tls-cert-file",
                &file("cert.pem"),
                "--tls-key-file",
                &file("key.pem"),
                "--tls-auth-clients",
                "no",
            ]
            .map(str::to_owned)
            .to_vec()
        } else {
            vec!["--port".to_owned(), port.clone()]
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir.path().to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the tests run a real redis-server: apt install redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            return true; // listening; the relay's client does the handshake
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
