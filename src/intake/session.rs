//! The SMTP server session as a sans-IO state machine: command lines in, [`Action`]s out.
//!
//! It knows the RFC 5321 sequence (greeting → HELO/EHLO → MAIL → RCPT… → DATA), the ESMTP
//! extensions the relay offers, and the policy limits; it does no I/O, so every transition is a
//! unit test over plain bytes. The I/O loop (`connection`) feeds it lines, sends the replies,
//! reads DATA when told to, and reports back with [`Session::message_done`].
//!
//! States: no greeting yet (`helo == None`) → greeted → in a transaction (`tx`, with a sender and
//! zero or more recipients). DATA hands the transaction to the I/O loop and returns to greeted.
//! STARTTLS and a successful AUTH are orthogonal flags; during an AUTH exchange (`sasl`) lines
//! are SASL responses, not commands.

use std::net::IpAddr;
use std::sync::Arc;

use super::command::{self, Command, CommandError};
use super::reply::{self, Reply};
use super::sasl::{self, Exchange, Step};
use crate::auth::{Secret, Users};
use crate::observe::events;
use crate::policy::Policy;

/// Errors allowed before the session is closed (Postfix's `smtpd_hard_error_limit` is 20).
const MAX_ERRORS: u32 = 20;

/// What the I/O loop must do after a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply (354), then read the message data.
    ReadData(Reply),
    /// Send the reply (220), discard any input already received, do the TLS handshake, then
    /// call [`Session::tls_started`].
    StartTls(Reply),
    /// Check these AUTH credentials (slow: off the async threads), then call
    /// [`Session::auth_checked`].
    Verify {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// Send the reply and close the connection.
    Close(Reply),
}

/// A mail transaction: what MAIL and RCPT said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Envelope recipients, in order.
    pub recipients: Vec<String>,
    /// Recipients given with `NOTIFY=NEVER`: no delivery status notification about them.
    pub notify_never: Vec<String>,
    /// `BODY=8BITMIME` was given.
    pub eight_bit_mime: bool,
    /// `SMTPUTF8` was given.
    pub smtputf8: bool,
}

/// Settings shared by every session of a listener.
#[derive(Debug)]
pub struct Settings {
    /// The relay's name (banner, EHLO reply).
    pub hostname: String,
    /// Size, recipient and client rules.
    pub policy: Policy,
    /// Who may AUTH (empty: AUTH is not offered).
    pub users: Users,
    /// Offer AUTH to non-loopback clients without TLS (`listen.danger_allow_plaintext_auth`).
    pub plaintext_auth: bool,
}

/// What the listener knows about a connection when its session starts.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub ip: IpAddr,
    /// The connection is already encrypted (implicit-TLS listener).
    pub tls: bool,
    /// STARTTLS may be offered.
    pub can_starttls: bool,
    /// The client is outside `listen.allowed_networks`: it may only send after AUTH.
    pub needs_auth: bool,
}

/// One client's SMTP conversation.
#[derive(Debug)]
pub struct Session {
    settings: Arc<Settings>,
    client: IpAddr,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    /// The connection is encrypted.
    tls: bool,
    /// STARTTLS may be offered (plain connection on a listener with a certificate).
    can_starttls: bool,
    /// MAIL is refused until AUTH succeeds.
    needs_auth: bool,
    /// The user that authenticated.
    authenticated: Option<String>,
    /// An AUTH exchange waiting for the client's next line.
    sasl: Option<Exchange>,
}

impl Session {
    /// A new session for a client the listener has admitted.
    pub fn new(settings: Arc<Settings>, peer: Peer) -> Self {
        Session {
            settings,
            client: peer.ip,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            tls: peer.tls,
            can_starttls: peer.can_starttls && !peer.tls,
            needs_auth: peer.needs_auth,
            authenticated: None,
            sasl: None,
        }
    }

    /// AUTH is offered: there are users, and the password would not cross a network in clear.
    fn auth_offered(&self) -> bool {
        !self.settings.users.is_empty()
            && (self.tls
                || self.client.to_canonical().is_loopback()
                || self.settings.plaintext_auth)
    }

    /// The verdict on credentials from [`Action::Verify`].
    pub fn auth_checked(&mut self, user: String, ok: bool) -> Action {
        events::client_auth(self.client, &user, ok);
        if ok {
            self.authenticated = Some(user);
            Action::Reply(reply::auth_ok())
        } else {
            self.error(reply::auth_failed())
        }
    }

    /// The TLS handshake after STARTTLS succeeded: everything learnt before is forgotten
    /// (RFC 3207 §4.2); the client starts again with EHLO.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.can_starttls = false;
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.authenticated = None;
    }

    /// The 220 greeting.
    pub fn greeting(&self) -> Reply {
        Reply::bare(
            220,
            vec![format!("{} ESMTP gmail-relay ready", self.settings.hostname).into()],
        )
    }

    /// The client's address.
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The name the client gave in HELO/EHLO.
    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or("unknown")
    }

    /// The `with` protocol for the `Received:` header (RFC 3848, 6531).
    pub fn protocol(&self, tx: &Transaction) -> &'static str {
        let auth = self.authenticated.is_some();
        match (self.esmtp, tx.smtputf8, self.tls, auth) {
            (false, ..) => "SMTP",
            (true, true, true, true) => "UTF8SMTPSA",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, false, false) => "UTF8SMTP",
            (true, false, true, true) => "ESMTPSA",
            (true, false, true, false) => "ESMTPS",
            (true, false, false, true) => "ESMTPA",
            (true, false, false, false) => "ESMTP",
        }
    }

    /// Handles one command line (with its line ending).
    pub fn command(&mut self, line: &[u8]) -> Action {
        if let Some(exchange) = self.sasl.take() {
            return self.sasl_step(exchange.respond(line));
        }
        let reply = match command::parse(line) {
            Ok(cmd) => match self.apply(cmd) {
                Ok(action) => return action,
                Err(reply) => reply,
            },
            Err(e) => parse_error(e),
        };
        self.error(reply)
    }

    /// A reply the I/O loop produced itself (line too long): counted like any error.
    pub fn error(&mut self, reply: Reply) -> Action {
        if reply.is_error() {
            self.errors += 1;
            if self.errors >= MAX_ERRORS {
                return Action::Close(reply::too_many_errors());
            }
        }
        Action::Reply(reply)
    }

    fn apply(&mut self, cmd: Command) -> Result<Action, Reply> {
        let reply = match cmd {
            Command::Ehlo(name) => {
                self.greet(name, true);
                let max = self.settings.policy.max_message_size();
                let mut lines: Vec<std::borrow::Cow<'static, str>> = vec![
                    format!("{} greets [{}]", self.settings.hostname, self.client).into(),
                    "PIPELINING".into(),
                    format!("SIZE {max}").into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                if self.can_starttls {
                    lines.push("STARTTLS".into());
                }
                if self.auth_offered() {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                Reply::bare(250, lines)
            }
            Command::Helo(name) => {
                self.greet(name, false);
                Reply::bare(250, vec![self.settings.hostname.clone().into()])
            }
            Command::Mail {
                sender,
                size,
                eight_bit_mime,
                smtputf8,
            } => {
                if self.helo.is_none() {
                    return Err(reply::need_helo());
                }
                if self.tx.is_some() {
                    return Err(reply::nested_mail());
                }
                if self.needs_auth && self.authenticated.is_none() {
                    return Err(reply::auth_required());
                }
                if let Some(size) = size {
                    self.settings.policy.declared_size(size)?;
                }
                if !sender.is_ascii() && !smtputf8 {
                    return Err(reply::needs_smtputf8());
                }
                self.settings.policy.sender(&sender).map_err(|r| {
                    let reply = Reply::from(r);
                    events::sender_refused(self.client, &sender, &reply.first_line());
                    reply
                })?;
                self.tx = Some(Transaction {
                    sender,
                    recipients: Vec::new(),
                    notify_never: Vec::new(),
                    eight_bit_mime,
                    smtputf8,
                });
                reply::sender_ok()
            }
            Command::Rcpt {
                address: recipient,
                notify_never,
            } => {
                let policy = &self.settings.policy;
                let tx = self.tx.as_mut().ok_or_else(reply::need_mail)?;
                if recipient.is_empty() || !recipient.contains('@') {
                    return Err(reply::bad_recipient());
                }
                if !recipient.is_ascii() && !tx.smtputf8 {
                    return Err(reply::needs_smtputf8());
                }
                policy.recipient(&recipient).map_err(|r| {
                    let reply = Reply::from(r);
                    events::recipient_refused(self.client, &recipient, &reply.first_line());
                    reply
                })?;
                policy.another_recipient(tx.recipients.len())?;
                if notify_never {
                    tx.notify_never.push(recipient.clone());
                }
                tx.recipients.push(recipient);
                reply::recipient_ok()
            }
            Command::Data => match &self.tx {
                None => return Err(reply::need_mail()),
                Some(tx) if tx.recipients.is_empty() => return Err(reply::need_rcpt()),
                Some(_) => return Ok(Action::ReadData(reply::start_data())),
            },
            Command::Rset => {
                self.tx = None;
                reply::ok()
            }
            Command::Noop => reply::ok(),
            Command::Quit => return Ok(Action::Close(reply::bye())),
            Command::Vrfy => reply::cannot_vrfy(),
            Command::Help => reply::help(),
            Command::Auth { mechanism, initial } => return self.auth(mechanism, &initial),
            Command::StartTls => {
                if self.tls {
                    return Err(reply::already_tls());
                }
                if !self.can_starttls {
                    return Err(reply::not_implemented("STARTTLS"));
                }
                return Ok(Action::StartTls(reply::ready_for_tls()));
            }
            Command::NotImplemented(name) => return Err(reply::not_implemented(name)),
        };
        Ok(Action::Reply(reply))
    }

    fn sasl_step(&mut self, (next, step): (Option<Exchange>, Step)) -> Action {
        self.sasl = next;
        match step {
            Step::Challenge(r) => Action::Reply(r),
            Step::Credentials { user, password } => Action::Verify { user, password },
            Step::Fail(r) => self.error(r),
        }
    }

    fn auth(&mut self, mechanism: Option<sasl::Mechanism>, initial: &str) -> Result<Action, Reply> {
        if self.settings.users.is_empty() {
            return Err(reply::not_implemented("AUTH"));
        }
        if !self.auth_offered() {
            return Err(reply::auth_needs_tls());
        }
        if self.helo.is_none() {
            return Err(reply::need_helo());
        }
        if self.authenticated.is_some() {
            return Err(reply::already_authenticated());
        }
        if self.tx.is_some() {
            return Err(reply::nested_mail());
        }
        let mechanism = mechanism.ok_or_else(reply::auth_unknown_mechanism)?;
        Ok(self.sasl_step(sasl::start(mechanism, initial)))
    }

    fn greet(&mut self, name: String, esmtp: bool) {
        self.helo = Some(name);
        self.esmtp = esmtp;
        self.tx = None;
    }

    /// Takes the transaction after DATA was accepted with [`Action::ReadData`]. Whatever
    /// happens to the data, the session is back to "greeted" afterwards.
    pub fn take_transaction(&mut self) -> Option<Transaction> {
        self.tx.take()
    }

    /// Accounts for the reply to the end of DATA (an error counts towards the limit).
    pub fn message_done(&mut self, reply: Reply) -> Action {
        self.error(reply)
    }
}

fn parse_error(e: CommandError) -> Reply {
    match e {
        CommandError::Unknown => reply::unknown_command(),
        CommandError::Syntax(usage) => reply::syntax(usage),
        CommandError::BadSender => reply::bad_sender(),
        CommandError::BadRecipient => reply::bad_recipient(),
        CommandError::BadParameter(p) => reply::bad_parameter(&p),
        CommandError::UnsupportedParameter(p) => reply::unsupported_parameter(&p),
    }
}

/// A plain loopback connection, for tests.
#[cfg(test)]
pub fn tests_peer() -> Peer {
    Peer {
        ip: "127.0.0.1".parse().expect("literal"),
        tls: false,
        can_starttls: false,
        needs_auth: false,
    }
}

#[cfg(test)]
mod tests;
