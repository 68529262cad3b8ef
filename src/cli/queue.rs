//! `gmail-relay queue ...` (and `mailq`): the queue commands' arguments and output.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use gmail_relay::control::{self, Reply, Request};
use gmail_relay::spool::QueueId;

use super::EXIT_CONFIG;

/// Arguments of `gmail-relay queue`.
#[derive(Args)]
pub struct QueueArgs {
    /// The configuration file [default: $GMAIL_RELAY_CONFIG, else /etc/gmail-relay/relay.toml].
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<std::path::PathBuf>,
    /// Print JSON (one object) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: QueueCommand,
}

#[derive(Subcommand)]
enum QueueCommand {
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
    pub fn mailq_with(config: Option<std::path::PathBuf>) -> QueueArgs {
        QueueArgs {
            config,
            json: false,
            command: QueueCommand::List,
        }
    }
}

/// Runs a queue command; exit 0 done, 1 failed, 2 config, 3 no such message, 4 busy.
pub fn run(args: QueueArgs) -> ExitCode {
    let local = match super::local_config(args.config, "gmail-relay", EXIT_CONFIG) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let request = match args.command {
        QueueCommand::List => Request::List,
        QueueCommand::Show { id, body } => Request::Show { id, body },
        QueueCommand::Retry { id, .. } => Request::Retry { id },
        QueueCommand::Delete { id: Some(id), .. } => Request::Delete { id },
        QueueCommand::Delete { id: None, .. } => Request::DeleteFailed,
        QueueCommand::Hold { id } => Request::Hold { id },
        QueueCommand::Release { id } => Request::Release { id },
        QueueCommand::Requeue { id, account, .. } => {
            if let Some(name) = &account
                && !local.accounts.contains(name)
            {
                eprintln!(
                    "gmail-relay: --account {name:?} is not an account of this config (the \
                     accounts are {})",
                    local.accounts.join(", ")
                );
                return ExitCode::from(EXIT_CONFIG);
            }
            Request::Requeue { id, account }
        }
        QueueCommand::Status => Request::Status,
    };
    let answer = match super::block_on(ask(&local.queue_dir, request)) {
        Ok(a) => a,
        Err(e) => {
            if args.json {
                println!("{}", serde_json::json!({ "error": e }));
            }
            eprintln!("gmail-relay: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    let now = SystemTime::now();
    if args.json {
        let value = match &answer.reply {
            Reply::List(l) => serde_json::to_string(l),
            Reply::Show(s) => serde_json::to_string(s),
            Reply::Done(d) => serde_json::to_string(d),
            Reply::Status(s) => serde_json::to_string(
                &serde_json::json!({ "running": answer.running, "status": s }),
            ),
        };
        println!("{}", value.expect("replies serialise"));
        return ExitCode::SUCCESS;
    }
    let text = match &answer.reply {
        Reply::List(l) => control::render_list(l, now),
        Reply::Show(s) => control::render_show(s, now),
        Reply::Done(d) => control::render_done(d, answer.running),
        Reply::Status(s) => control::render_status(s.as_ref(), answer.running, now),
    };
    println!("{}", text.trim_end());
    ExitCode::SUCCESS
}

async fn ask(dir: &Path, request: Request) -> Result<control::Answer, control::ControlError> {
    control::request(dir, request).await
}
