//! The command line's definition: every subcommand, flag and help text.
//!
//! Kept apart from what the commands do so that `examples/cli-assets.rs` can include this file
//! (`#[path]`) and render the manual pages and shell completions from the same definition, while
//! the binary itself carries neither clap_mangen nor clap_complete. So this file may use only
//! clap, std, humantime and the library, never `super::` or `crate::`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use gmail_relay::spool::QueueId;

#[derive(Parser)]
#[command(
    name = "gmail-relay",
    version,
    about = "Local SMTP relay that queues mail durably and forwards it to Gmail"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the relay.
    Serve {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate the configuration and exit (0 valid, 2 invalid; 1 if --upstream fails).
    Check {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// Also connect to the upstream, secure the connection and log in (no mail is sent).
        #[arg(long)]
        upstream: bool,
        /// With --upstream, for an account whose service account logs in as each sender
        /// (impersonate_sender): the sender mailbox to log in as.
        #[arg(long = "as", value_name = "ADDRESS", requires = "upstream")]
        as_sender: Option<String>,
    },
    /// Queue a small test message through the running relay and wait for its outcome.
    SendTest {
        /// The configuration file [default: $GMAIL_RELAY_CONFIG, else /etc/gmail-relay/relay.toml].
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Where to send it.
        #[arg(long, value_name = "ADDR")]
        to: String,
        /// How long to wait for the outcome.
        #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Exit 0 if the relay runs and delivery is not paused, else 1 (for HEALTHCHECK).
    Health {
        /// The configuration file [default: $GMAIL_RELAY_CONFIG, else /etc/gmail-relay/relay.toml].
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the /healthz JSON instead of one line for people.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and change the queue (works whether or not the relay runs).
    Queue(QueueArgs),
    /// The sendmail interface: read a message on standard input and hand it to the running
    /// relay (flags as sendmail's: -t, -f, -F, -i, recipients; exit codes as sysexits).
    Sendmail {
        /// sendmail's flags and recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Read a password on standard input and print its argon2id hash, for `listen.users`.
    HashPassword,
    /// OAuth2 for Gmail (upstream.auth = "xoauth2").
    #[command(subcommand)]
    Oauth(Oauth),
}

#[derive(Subcommand)]
pub enum Oauth {
    /// Get a refresh token: open the printed URL, consent, and the token is written to
    /// upstream.oauth2.refresh_token_file (mode 0600).
    Authorize {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The account: default ([upstream]) or NAME of [accounts.NAME].
        #[arg(long, value_name = "NAME", default_value = "default")]
        account: String,
    },
    /// Fetch an access token and log in to the upstream with XOAUTH2, without sending mail.
    Test {
        /// The configuration file.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
        /// The account: default ([upstream]) or NAME of [accounts.NAME].
        #[arg(long, value_name = "NAME", default_value = "default")]
        account: String,
    },
}

/// Arguments of `gmail-relay queue`.
#[derive(Args)]
pub struct QueueArgs {
    /// The configuration file [default: $GMAIL_RELAY_CONFIG, else /etc/gmail-relay/relay.toml].
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON (one object) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Subcommand)]
pub enum QueueCommand {
    /// List queued and failed messages, with the state of delivery (like mailq).
    List,
    /// Show one message: envelope, recipients, history and headers.
    Show {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: QueueId,
        /// Print the whole message, not only its headers.
        #[arg(long)]
        body: bool,
    },
    /// Attempt a message now (or --all); a delivery pause is probed now.
    Retry {
        /// The queue id.
        #[arg(value_parser = parse_id, required_unless_present = "all", conflicts_with = "all")]
        id: Option<QueueId>,
        /// Every queued message that is not held.
        #[arg(long)]
        all: bool,
    },
    /// Delete a message from the queue or the failed area (or every --failed one).
    Delete {
        /// The queue id.
        #[arg(value_parser = parse_id, required_unless_present = "failed", conflicts_with = "failed")]
        id: Option<QueueId>,
        /// Every message in the failed area.
        #[arg(long)]
        failed: bool,
    },
    /// Keep a queued message from being attempted until it is released.
    Hold {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: QueueId,
    },
    /// Let a held message be attempted again.
    Release {
        /// The queue id.
        #[arg(value_parser = parse_id)]
        id: QueueId,
    },
    /// Move a failed message (or --all of them) back into the queue, due now; with
    /// --account, send it (failed or queued) through that account from now on.
    Requeue {
        /// The queue id.
        #[arg(value_parser = parse_id, required_unless_present = "all", conflicts_with = "all")]
        id: Option<QueueId>,
        /// Every message in the failed area.
        #[arg(long)]
        all: bool,
        /// The account to send it through (a name from the config: default, or NAME of
        /// [accounts.NAME]).
        #[arg(long, value_name = "NAME")]
        account: Option<String>,
    },
    /// One line: is delivery running or paused, and why.
    Status,
}

fn parse_id(text: &str) -> Result<QueueId, String> {
    QueueId::parse(text).ok_or_else(|| {
        format!("{text:?} is not a queue id (16 lowercase hex digits, as `queue list` shows)")
    })
}

impl QueueArgs {
    /// `mailq` (and `sendmail -bp`): list the queue.
    pub fn mailq_with(config: Option<PathBuf>) -> QueueArgs {
        QueueArgs {
            config,
            json: false,
            command: QueueCommand::List,
        }
    }
}
