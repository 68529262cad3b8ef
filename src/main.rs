//! The `gmail-relay` binary: parses the command line and hands over to `cli`, which calls the
//! library.
//!
//! Invoked as `sendmail` (a symlink at /usr/sbin/sendmail) it is the sendmail interface; as
//! `mailq`, `gmail-relay queue list`.
//!
//! Exit codes: 0 success, 1 runtime failure (spool locked, port in use, ...), 2 bad config or
//! usage, 3 no such message, 4 message busy (queue commands); sysexits for `sendmail`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gmail-relay",
    version,
    about = "Local SMTP relay that queues mail durably and forwards it to Gmail"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    Queue(cli::queue::QueueArgs),
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
enum Oauth {
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

fn main() -> ExitCode {
    let argv0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match argv0.as_str() {
        "mailq" => return cli::queue::run(cli::queue::QueueArgs::mailq_with(None)),
        "sendmail" => return cli::sendmail::run(std::env::args().skip(1).collect()),
        _ => {}
    }
    match Cli::parse().command {
        Command::Check {
            config,
            upstream,
            as_sender,
        } => cli::serve::check(&config, upstream, as_sender.as_deref()),
        Command::SendTest { config, to, wait } => cli::send_test::run(config, &to, wait),
        Command::Serve { config } => cli::serve::serve(&config),
        Command::Queue(args) => cli::queue::run(args),
        Command::Health { config, json } => cli::health::run(config, json),
        Command::Sendmail { args } => cli::sendmail::run(args),
        Command::HashPassword => cli::hash_password(),
        Command::Oauth(Oauth::Authorize { config, account }) => {
            cli::with_runtime(cli::oauth::authorize(&config, &account))
        }
        Command::Oauth(Oauth::Test { config, account }) => {
            cli::with_runtime(cli::oauth::test(&config, &account))
        }
    }
}
