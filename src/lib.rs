//! gmail-relay: a local SMTP smart host that queues every message durably on disk and
//! forwards it to Gmail over verified TLS with authentication.
//!
//! # Flow
//!
//! ```text
//!  app ──plain SMTP──▶ intake ──commit──▶ spool ──due──▶ scheduler ──▶ delivery ──TLS+AUTH──▶ Gmail
//!                      policy            (disk)                        (pool of authenticated
//!                      250 only after the commit                        connections, per-recipient
//!                                                                       outcomes)
//! ```
//!
//! # Modules
//!
//! Each module uses only modules below it in this list (and `observe`, which everything may
//! report to).
//!
//! - [`daemon`]: prepares a configuration (credentials, TLS contexts), start-up order, reload
//!   and shutdown; wires the rest together.
//! - [`control`]: the queue commands, through the control socket or on a stopped spool.
//! - [`cluster`]: send budgets and pauses shared with other replicas through Redis; the
//!   courier the scheduler delivers through when replicas share accounts.
//! - [`sendmail`]: the sendmail interface, a local client of the intake.
//! - [`intake`]: SMTP listeners and sessions; answers 250 only after the spool commit.
//! - [`policy`]: who may relay and within which limits (pure decisions).
//! - [`scheduler`]: what is due when; retries, backoff, pauses, concurrency.
//! - [`spool`]: the on-disk queue, its commit protocol and recovery.
//! - [`delivery`]: one attempt against the upstream with the relay's SMTP client; reply
//!   classification.
//! - [`bounce`]: delivery status notifications for failed mail.
//! - [`auth`]: upstream credentials, listener users and secret types.
//! - [`rfc5322`]: message-format helpers (dates, header fields).
//! - [`observe`]: logging and the mail event log.
//! - [`config`]: `relay.toml` + environment, validated into typed sections of plain data.
//! - [`secret`]: the redacted secret type, and where a secret is kept.
//!
//! # Durability contract
//!
//! A message is acknowledged (`250`) only after its bytes and envelope are fsynced, renamed into
//! the queue and the queue directory is fsynced. A crash at any instant loses no acknowledged
//! message. Delivery is at-least-once: a crash between the upstream's `250` and the removal from
//! the spool may send a message twice; nothing else may.
//!
//! # Errors
//!
//! Each module returns its own `thiserror` enum; every error a user can see names what failed
//! and where (file, key, address). `anyhow` is used only in the binary, to add context.

pub mod auth;
pub mod bounce;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod delivery;
pub mod intake;
pub mod observe;
pub mod policy;
pub mod rfc5322;
pub mod scheduler;
pub mod secret;
pub mod sendmail;
pub mod spool;
