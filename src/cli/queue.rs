//! `gmail-relay queue ...` (and `mailq`): the queue commands' arguments and output.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use gmail_relay::control::{self, Reply, Request};

use super::EXIT_CONFIG;
use super::args::{QueueArgs, QueueCommand};

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
