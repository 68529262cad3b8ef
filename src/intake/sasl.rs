//! The SASL exchange of AUTH PLAIN (RFC 4616) and AUTH LOGIN on the listener: the client's
//! base64 lines in, a user name and password (or a refusal) out. Checking the password is not
//! done here: the session hands the credentials to the I/O loop, which verifies them off the
//! async threads.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::reply::{self, Reply};
use crate::auth::Secret;

/// A mechanism the listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// `AUTH PLAIN`.
    Plain,
    /// `AUTH LOGIN`.
    Login,
}

/// What the session does next.
#[derive(Debug)]
pub enum Step {
    /// Send this 334 challenge and read the client's answer.
    Challenge(Reply),
    /// The client gave these credentials: verify them.
    Credentials {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// The exchange failed (cancelled, undecodable); send this.
    Fail(Reply),
}

/// An exchange waiting for the client's next line.
#[derive(Debug)]
pub enum Exchange {
    /// AUTH PLAIN without an initial response: waiting for it.
    Plain,
    /// AUTH LOGIN: waiting for the user name.
    LoginUser,
    /// AUTH LOGIN: waiting for the password of this user.
    LoginPassword(String),
}

/// Starts an exchange. `initial` is the initial response from the AUTH line ("" if none, "="
/// for an empty one).
pub fn start(mechanism: Mechanism, initial: &str) -> (Option<Exchange>, Step) {
    match (mechanism, initial) {
        (Mechanism::Plain, "") => (Some(Exchange::Plain), Step::Challenge(challenge(""))),
        (Mechanism::Plain, ir) => (None, plain(ir)),
        (Mechanism::Login, "") => (
            Some(Exchange::LoginUser),
            Step::Challenge(challenge("Username:")),
        ),
        (Mechanism::Login, ir) => match decode(ir) {
            Ok(user) => (
                Some(Exchange::LoginPassword(user)),
                Step::Challenge(challenge("Password:")),
            ),
            Err(step) => (None, step),
        },
    }
}

impl Exchange {
    /// Takes the client's answer (one line, with its line ending).
    pub fn respond(self, line: &[u8]) -> (Option<Exchange>, Step) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text == "*" {
            return (None, Step::Fail(reply::auth_cancelled()));
        }
        match self {
            Exchange::Plain => (None, plain(text)),
            Exchange::LoginUser => match decode(text) {
                Ok(user) => (
                    Some(Exchange::LoginPassword(user)),
                    Step::Challenge(challenge("Password:")),
                ),
                Err(step) => (None, step),
            },
            Exchange::LoginPassword(user) => match decode(text) {
                Ok(password) => (
                    None,
                    Step::Credentials {
                        user,
                        password: Secret::new(password),
                    },
                ),
                Err(step) => (None, step),
            },
        }
    }
}

fn challenge(text: &str) -> Reply {
    Reply::bare(334, vec![B64.encode(text).into()])
}

fn decode(text: &str) -> Result<String, Step> {
    let text = if text == "=" { "" } else { text };
    B64.decode(text.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(Step::Fail(reply::auth_undecodable()))
}

/// `authzid NUL authcid NUL password`; an authorization identity other than the user is not
/// supported.
fn plain(text: &str) -> Step {
    let Ok(raw) = decode(text) else {
        return Step::Fail(reply::auth_undecodable());
    };
    let mut parts = raw.split('\0');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(authz), Some(user), Some(password), None)
            if !user.is_empty() && (authz.is_empty() || authz == user) =>
        {
            Step::Credentials {
                user: user.to_owned(),
                password: Secret::new(password),
            }
        }
        _ => Step::Fail(reply::auth_undecodable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(step: Step) -> (String, String) {
        match step {
            Step::Credentials { user, password } => (user, password.expose().to_owned()),
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let ir = B64.encode("\0printer\0s3cret");
        assert_eq!(
            creds(start(Mechanism::Plain, &ir).1),
            ("printer".into(), "s3cret".into())
        );
        let (next, step) = start(Mechanism::Plain, "");
        assert!(matches!(step, Step::Challenge(ref r) if r.code == 334));
        let line = format!("{}\r\n", B64.encode("printer\0printer\0s3cret"));
        assert_eq!(creds(next.unwrap().respond(line.as_bytes()).1).0, "printer");
    }

    #[test]
    fn login_in_two_steps() {
        let (next, _) = start(Mechanism::Login, "");
        let (next, step) = next
            .unwrap()
            .respond(format!("{}\r\n", B64.encode("scanner")).as_bytes());
        assert!(matches!(step, Step::Challenge(_)));
        let (next, step) = next
            .unwrap()
            .respond(format!("{}\r\n", B64.encode("pw")).as_bytes());
        assert!(next.is_none());
        assert_eq!(creds(step), ("scanner".into(), "pw".into()));
    }

    #[test]
    fn cancel_and_garbage_fail() {
        let (next, _) = start(Mechanism::Login, "");
        assert!(matches!(next.unwrap().respond(b"*\r\n").1, Step::Fail(r) if r.code == 501));
        assert!(matches!(start(Mechanism::Plain, "!!!").1, Step::Fail(_)));
        let other_authz = B64.encode("admin\0printer\0pw");
        assert!(matches!(
            start(Mechanism::Plain, &other_authz).1,
            Step::Fail(_)
        ));
        let no_password = B64.encode("\0printer");
        assert!(matches!(
            start(Mechanism::Plain, &no_password).1,
            Step::Fail(_)
        ));
    }

    #[test]
    fn the_password_never_prints() {
        let step = start(Mechanism::Plain, &B64.encode("\0u\0hunter2")).1;
        assert!(!format!("{step:?}").contains("hunter2"));
    }
}
