//! The `gmail-relay` binary: parses the command line and hands over to `cli`, which calls the
//! library.
//!
//! Invoked as `sendmail` (a symlink at /usr/sbin/sendmail) it is the sendmail interface; as
//! `mailq`, `gmail-relay queue list`; as `newaliases`, nothing (there is no alias database).
//!
//! Exit codes: 0 success, 1 runtime failure (spool locked, port in use, ...), 2 bad config or
//! usage, 3 no such message, 4 message busy (queue commands); sysexits for `sendmail`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cli::args::{Cli, Command, Oauth};

fn main() -> ExitCode {
    let argv0 = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    match argv0.as_str() {
        "mailq" => return cli::queue::run(cli::args::QueueArgs::mailq_with(None)),
        "sendmail" => return cli::sendmail::run(std::env::args().skip(1).collect()),
        // Packages run `newaliases` after editing /etc/aliases, as they would with Postfix; the
        // relay sends local users' mail to sendmail.admin_address instead, so there is nothing
        // to rebuild, and failing would break their installation.
        "newaliases" => return ExitCode::SUCCESS,
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
