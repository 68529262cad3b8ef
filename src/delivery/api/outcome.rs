//! What an answer of the Gmail API means: the same classes as an SMTP reply (see `classify`),
//! from the HTTP status and Google's JSON error (`{"error": {"code", "message", "status",
//! "errors": [{"reason"}], "details": [{"reason"}]}}`).
//!
//! | answer | class | what happens |
//! |---|---|---|
//! | 2xx with an `id` | delivered | every pending recipient, the Gmail message id as the reply |
//! | 401 | refresh | the token is refreshed and the upload sent once more; then a credentials pause |
//! | 403 `insufficientPermissions`, `ACCESS_TOKEN_SCOPE_INSUFFICIENT` | credentials pause | names the scope |
//! | 403 `accessNotConfigured`, `SERVICE_DISABLED` | credentials pause | enable the Gmail API |
//! | 403 `dailyLimitExceeded` | quota pause | as `550 5.4.5` |
//! | 429, 403 `rateLimitExceeded` / `userRateLimitExceeded` | rate pause until `Retry-After` or the "Retry after" time | a quota pause when that is more than an hour away |
//! | other 403, 404, 400 `failedPrecondition` | credentials pause | the account or set-up, not the message |
//! | 400 (`invalidArgument`: "Invalid To header", "Recipient address required") | message fails | the API's message in the DSN |
//! | 413 | message fails | too large |
//! | 5xx, 408, a 2xx without an `id`, anything else | retry | the message is tried again later |
//!
//! Transport errors (connect, TLS, timeouts) are the caller's: they never reach this table.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::delivery::{Pause, PauseKind};

/// A rate limit further away than this is treated as a spent quota.
const RATE_LIMIT_AS_QUOTA: Duration = Duration::from_secs(3600);

/// An answer of the API, as received.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The HTTP status.
    pub status: u16,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// What the answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Sent: the Gmail message id.
    Sent(String),
    /// The token was refused: refresh it and try once more.
    Unauthorized(String),
    /// Stop delivery through this account.
    Pause(Pause),
    /// The message will never be accepted.
    Fail(String),
    /// Try the message again later.
    Retry(String),
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    error: Option<GoogleError>,
}

#[derive(Deserialize, Default)]
struct GoogleError {
    message: Option<String>,
    status: Option<String>,
    #[serde(default)]
    errors: Vec<Reason>,
    #[serde(default)]
    details: Vec<Reason>,
}

#[derive(Deserialize)]
struct Reason {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Sent {
    id: Option<String>,
}

/// Classifies `answer`, received at `now` from the API at the setting `api_url_key` (named
/// when the API is not there).
pub fn classify(answer: &Answer<'_>, now: SystemTime, api_url_key: &str) -> Outcome {
    let status = answer.status;
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<Sent>(answer.body)
            .ok()
            .and_then(|s| s.id)
        {
            Some(id) => Outcome::Sent(id),
            // Whether it was sent is unknown: sending again is the safe side.
            None => Outcome::Retry(format!(
                "the Gmail API answered {status} without a message id"
            )),
        };
    }
    let error = serde_json::from_slice::<ErrorBody>(answer.body)
        .ok()
        .and_then(|b| b.error)
        .unwrap_or_default();
    let reasons: Vec<&str> = error
        .errors
        .iter()
        .chain(&error.details)
        .filter_map(|r| r.reason.as_deref())
        .chain(error.status.as_deref())
        .collect();
    let has = |r: &str| reasons.iter().any(|x| x.eq_ignore_ascii_case(r));
    let message = error.message.clone().unwrap_or_else(|| {
        String::from_utf8_lossy(answer.body)
            .chars()
            .take(200)
            .collect()
    });
    let said = format!(
        "the Gmail API answered {status}{}: {message}",
        match reasons.first() {
            Some(r) => format!(" {r}"),
            None => String::new(),
        }
    );
    let credentials = |hint: &str| {
        Outcome::Pause(Pause::new(
            PauseKind::Credentials,
            if hint.is_empty() {
                said.clone()
            } else {
                format!("{said}; {hint}")
            },
        ))
    };
    match status {
        401 => Outcome::Unauthorized(said),
        429 => rate_limited(&said, answer.retry_after, &message, now),
        403 if has("rateLimitExceeded") || has("userRateLimitExceeded") => {
            rate_limited(&said, answer.retry_after, &message, now)
        }
        403 if has("dailyLimitExceeded") => Outcome::Pause(Pause::new(
            PauseKind::Quota,
            format!("{said} (the account's daily sending limit, as 550 5.4.5 over SMTP)"),
        )),
        403 if has("insufficientPermissions") || has("ACCESS_TOKEN_SCOPE_INSUFFICIENT") => {
            credentials(
                "the access token lacks a sending scope (https://mail.google.com/, or \
                 https://www.googleapis.com/auth/gmail.send): run `gmail-relay oauth authorize` \
                 again, or for a service account grant https://mail.google.com/ in its \
                 domain-wide delegation",
            )
        }
        403 if has("accessNotConfigured") || has("SERVICE_DISABLED") => credentials(
            "enable the Gmail API in the Google Cloud project of the OAuth client or service \
             account (APIs & Services → Library → Gmail API → Enable), then wait a few minutes",
        ),
        403 => credentials(""),
        404 => credentials(&format!(
            "the Gmail API is not at that address: check {api_url_key}"
        )),
        400 if has("failedPrecondition") => credentials(
            "the mailbox cannot send through the API (Gmail not enabled for the user, or the \
             account suspended)",
        ),
        400 => Outcome::Fail(said),
        413 => Outcome::Fail(format!(
            "{said} (the message is larger than the Gmail API accepts)"
        )),
        _ => Outcome::Retry(said),
    }
}

/// A rate limit until `Retry-After` (seconds or an HTTP date) or the "Retry after <RFC 3339
/// time>" Google writes in the message; a quota pause when that is over an hour away.
fn rate_limited(said: &str, retry_after: Option<&str>, message: &str, now: SystemTime) -> Outcome {
    let until = retry_after
        .and_then(|v| {
            let v = v.trim();
            v.parse::<u64>()
                .ok()
                .map(|s| now + Duration::from_secs(s))
                .or_else(|| httpdate::parse_http_date(v).ok())
        })
        .or_else(|| {
            let at = message.find("Retry after ")? + "Retry after ".len();
            let word = message[at..].split_whitespace().next()?;
            humantime::parse_rfc3339_weak(word.trim_end_matches(['.', ',', ')'])).ok()
        })
        .filter(|&t| t > now);
    let far =
        until.is_some_and(|t| t.duration_since(now).unwrap_or_default() > RATE_LIMIT_AS_QUOTA);
    let (kind, reason) = match until {
        Some(t) if far => (
            PauseKind::Quota,
            format!(
                "{said} (rate limited until {}, more than an hour away: treated as a spent quota)",
                humantime::format_rfc3339_seconds(t)
            ),
        ),
        Some(t) => (
            PauseKind::RateLimited,
            format!(
                "{said} (retry after {})",
                humantime::format_rfc3339_seconds(t)
            ),
        ),
        None => (PauseKind::RateLimited, said.to_owned()),
    };
    Outcome::Pause(Pause {
        kind,
        reason,
        until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn google(code: u16, reason: &str, message: &str) -> String {
        serde_json::json!({"error": {"code": code, "message": message, "status": "X",
            "errors": [{"message": message, "domain": "global", "reason": reason}]}})
        .to_string()
    }

    fn answer(status: u16, body: &str) -> Outcome {
        classify(
            &Answer {
                status,
                retry_after: None,
                body: body.as_bytes(),
            },
            now(),
            "upstream.api_url",
        )
    }

    fn pause_of(outcome: Outcome) -> Pause {
        match outcome {
            Outcome::Pause(p) => p,
            other => panic!("not a pause: {other:?}"),
        }
    }

    #[test]
    fn every_row_of_the_table() {
        assert_eq!(
            answer(
                200,
                r#"{"id":"18c1f","threadId":"18c1f","labelIds":["SENT"]}"#
            ),
            Outcome::Sent("18c1f".into())
        );
        assert!(matches!(answer(200, "{}"), Outcome::Retry(_)));
        assert!(matches!(
            answer(401, &google(401, "authError", "Invalid Credentials")),
            Outcome::Unauthorized(m) if m.contains("Invalid Credentials")
        ));
        let scope = pause_of(answer(
            403,
            &google(
                403,
                "insufficientPermissions",
                "Request had insufficient authentication scopes.",
            ),
        ));
        assert_eq!(scope.kind, PauseKind::Credentials);
        assert!(
            scope.reason.contains("https://mail.google.com/"),
            "{}",
            scope.reason
        );
        let scope2 = pause_of(answer(
            403,
            r#"{"error":{"code":403,"message":"Request had insufficient authentication scopes.","status":"PERMISSION_DENIED","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"ACCESS_TOKEN_SCOPE_INSUFFICIENT"}]}}"#,
        ));
        assert!(
            scope2.reason.contains("oauth authorize"),
            "{}",
            scope2.reason
        );
        let quota = pause_of(answer(
            403,
            &google(403, "dailyLimitExceeded", "Daily Limit Exceeded"),
        ));
        assert_eq!(quota.kind, PauseKind::Quota);
        let disabled = pause_of(answer(
            403,
            &google(
                403,
                "accessNotConfigured",
                "Gmail API has not been used in project 1234",
            ),
        ));
        assert!(
            disabled.reason.contains("enable the Gmail API"),
            "{}",
            disabled.reason
        );
        assert_eq!(
            pause_of(answer(403, "forbidden")).kind,
            PauseKind::Credentials
        );
        assert_eq!(
            pause_of(answer(
                400,
                &google(400, "failedPrecondition", "Mail service not enabled")
            ))
            .kind,
            PauseKind::Credentials
        );
        assert!(matches!(
            answer(400, &google(400, "invalidArgument", "Invalid To header")),
            Outcome::Fail(m) if m.contains("invalidArgument: Invalid To header")
        ));
        assert!(matches!(answer(413, ""), Outcome::Fail(m) if m.contains("larger")));
        assert!(matches!(answer(500, "oops"), Outcome::Retry(m) if m.contains("500")));
        assert!(matches!(answer(503, ""), Outcome::Retry(_)));
    }

    #[test]
    fn rate_limits_wait_for_the_time_google_names() {
        let limited = |retry_after: Option<&str>, body: &str, status| {
            pause_of(classify(
                &Answer {
                    status,
                    retry_after,
                    body: body.as_bytes(),
                },
                now(),
                "upstream.api_url",
            ))
        };
        let p = limited(Some("30"), "", 429);
        assert_eq!(p.kind, PauseKind::RateLimited);
        assert_eq!(p.until, Some(now() + Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now() + Duration::from_secs(120));
        assert_eq!(
            limited(Some(&date), "", 429).until,
            Some(now() + Duration::from_secs(120))
        );
        // Google's words: "User-rate limit exceeded.  Retry after <time>".
        let at = humantime::format_rfc3339_millis(now() + Duration::from_secs(600)).to_string();
        let body = google(
            403,
            "userRateLimitExceeded",
            &format!("User-rate limit exceeded.  Retry after {at}"),
        );
        let p = limited(None, &body, 403);
        assert_eq!(
            (p.kind, p.until),
            (
                PauseKind::RateLimited,
                Some(now() + Duration::from_secs(600))
            )
        );
        // More than an hour away: a spent quota until then.
        let p = limited(Some("7200"), "", 429);
        assert_eq!(p.kind, PauseKind::Quota);
        assert_eq!(p.until, Some(now() + Duration::from_secs(7200)));
        // No time given: the scheduler's own retry schedule.
        let p = limited(
            None,
            &google(403, "rateLimitExceeded", "Rate Limit Exceeded"),
            403,
        );
        assert_eq!((p.kind, p.until), (PauseKind::RateLimited, None));
    }
}
