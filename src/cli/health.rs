//! `gmail-relay health`: exit 0 when the relay runs and delivery is not paused, 1 otherwise,
//! printing one line for people ("ok: 3 queued, oldest 2m", "paused (credentials): 535 5.7.8
//! ...; next probe in 4m") or, with `--json`, the `/healthz` document. For container
//! `HEALTHCHECK`s and monitoring scripts; asks the `/healthz` endpoint when `metrics.addr` is
//! set, else the control socket.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use gmail_relay::control::{self, Reply, Request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::EXIT_CONFIG;

/// Runs `health`.
pub fn run(config: Option<PathBuf>, as_json: bool) -> ExitCode {
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
    let (healthy, text) = match result {
        Ok(doc) => {
            let healthy = doc["status"] == "ok";
            let text = if as_json {
                doc.to_string()
            } else {
                line(&doc, SystemTime::now())
            };
            (healthy, text)
        }
        Err(why) if as_json => (
            false,
            json!({ "status": "down", "reason": why }).to_string(),
        ),
        Err(why) => (false, why),
    };
    println!("{text}");
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One line for people from a `/healthz` document.
fn line(doc: &Value, now: SystemTime) -> String {
    let q = &doc["queue"];
    let count = |k: &str| q[k].as_u64().unwrap_or(0);
    let mut queue = format!("{} queued", count("waiting") + count("active"));
    if count("active") > 0 {
        queue.push_str(&format!(" ({} being sent)", count("active")));
    }
    if count("held") > 0 {
        queue.push_str(&format!(", {} held", count("held")));
    }
    let oldest = count("oldest_age_seconds");
    if oldest > 0 {
        queue.push_str(&format!(
            ", oldest {}",
            control::short(Duration::from_secs(oldest))
        ));
    }
    if count("failed") > 0 {
        queue.push_str(&format!(", {} failed", count("failed")));
    }
    let text = |k: &str| doc[k].as_str().unwrap_or("");
    match text("status") {
        "ok" if doc["hold"] == true => {
            format!("ok, on hold (delivery.hold = true; nothing is sent): {queue}")
        }
        "ok" => format!("ok: {queue}"),
        "paused" => {
            let next = humantime::parse_rfc3339(text("next_probe"))
                .map(|t| control::until(now, t))
                .unwrap_or_else(|_| text("next_probe").to_owned());
            let several = doc["accounts"].as_object().is_some_and(|a| a.len() > 1);
            let cause = if several {
                format!("{}, account {}", text("cause"), text("account"))
            } else {
                text("cause").to_owned()
            };
            format!(
                "paused ({cause}): {}; next probe {next}; {queue}",
                text("reason")
            )
        }
        "stopping" => "stopping".to_owned(),
        other => format!("{other}: {queue}"),
    }
}

/// `GET /healthz`: its JSON, or why there is none.
async fn over_http(addr: std::net::SocketAddr) -> Result<Value, String> {
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
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    serde_json::from_str(body.trim())
        .map_err(|e| format!("{addr} answered /healthz with something that is not JSON: {e}"))
}

/// The scheduler's status over the control socket, in the shape of `/healthz`.
async fn over_socket(dir: &std::path::Path) -> Result<Value, String> {
    match control::request_running(dir, Request::Status).await {
        Ok(Reply::Status(Some(s))) => {
            let oldest = s
                .oldest
                .and_then(|id| SystemTime::now().duration_since(id.time()).ok())
                .map_or(0, |d| d.as_secs());
            let queue = json!({
                "waiting": s.scheduled,
                "active": s.active.len(),
                "held": s.held,
                "oldest_age_seconds": oldest,
            });
            let accounts: serde_json::Map<String, Value> = s
                .accounts
                .iter()
                .map(|a| (a.name.clone(), json!({ "user": a.label })))
                .collect();
            Ok(match &s.pause {
                Some(p) => json!({
                    "status": "paused",
                    "account": p.account,
                    "accounts": accounts,
                    "cause": p.cause,
                    "reason": p.reason,
                    "next_probe": humantime::format_rfc3339_seconds(p.next_probe).to_string(),
                    "queue": queue,
                }),
                None => {
                    json!({ "status": "ok", "hold": s.on_hold, "queue": queue, "accounts": accounts })
                }
            })
        }
        Ok(_) => Err("unexpected answer from the relay".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_for_each_state() {
        let now = humantime::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
        let ok = json!({"status": "ok", "hold": false, "queue": {"waiting": 3, "active": 0,
            "held": 0, "failed": 0, "oldest_age_seconds": 150}});
        assert_eq!(line(&ok, now), "ok: 3 queued, oldest 2m");
        let paused = json!({"status": "paused", "cause": "credentials",
            "reason": "535 5.7.8 Username and Password not accepted",
            "next_probe": "2026-12-02T10:04:00Z",
            "queue": {"waiting": 1, "active": 0, "held": 0, "failed": 0, "oldest_age_seconds": 30}});
        assert_eq!(
            line(&paused, now),
            "paused (credentials): 535 5.7.8 Username and Password not accepted; next probe in 4m; 1 queued, oldest 30s"
        );
        let hold = json!({"status": "ok", "hold": true, "queue": {"waiting": 2}});
        assert!(line(&hold, now).contains("on hold (delivery.hold = true"));
        assert_eq!(line(&json!({"status": "stopping"}), now), "stopping");
    }
}
