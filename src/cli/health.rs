//! `gmail-relay health`: exit 0 when the relay runs and delivery is not paused, 1 otherwise,
//! printing the reason. For container `HEALTHCHECK`s and monitoring scripts; asks the
//! `/healthz` endpoint when `metrics.addr` is set, else the control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use gmail_relay::control::{self, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::EXIT_CONFIG;

/// Runs `health`.
pub fn run(config: Option<PathBuf>) -> ExitCode {
    let local = match super::local_config(config, "gmail-relay", EXIT_CONFIG) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let result = super::block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            match local.metrics.addr {
                Some(addr) => over_http(addr).await,
                None => over_socket(&local.queue_dir).await,
            }
        })
        .await
        .unwrap_or_else(|_| Err("no answer within 10s".to_owned()))
    });
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(text) => {
            println!("{text}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /healthz`; `Ok(body)` on 200.
async fn over_http(addr: std::net::SocketAddr) -> Result<String, String> {
    let addr = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => {
            (std::net::Ipv4Addr::LOCALHOST, addr.port()).into()
        }
        ip if ip.is_unspecified() => (std::net::Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    };
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("the relay is not running (metrics.addr {addr}: {e})"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut response = Vec::new();
    (&mut stream)
        .take(1 << 20)
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let ok = head.starts_with("HTTP/1.1 200");
    let body = body.trim().to_owned();
    if ok { Ok(body) } else { Err(body) }
}

/// The scheduler's status over the control socket.
async fn over_socket(dir: &std::path::Path) -> Result<String, String> {
    match control::request_running(dir, Request::Status).await {
        Ok(Reply::Status(Some(status))) => {
            let line = control::render_status(Some(&status), true, SystemTime::now());
            if status.pause.is_some() {
                Err(line)
            } else {
                Ok(line)
            }
        }
        Ok(_) => Err("unexpected answer from the relay".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
