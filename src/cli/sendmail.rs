//! `gmail-relay sendmail ...` and the binary invoked as `sendmail`: exit codes are sysexits.

use std::process::ExitCode;

use gmail_relay::sendmail::{self, Defaults, EX_CONFIG, Mode};

use super::config_path;

/// Runs the sendmail interface with `args` (without the program name).
pub fn run(args: Vec<String>) -> ExitCode {
    let inv = match sendmail::parse_args(args) {
        Ok(inv) => inv,
        Err(e) => return fail(&e),
    };
    super::init_cli_logging();
    if !inv.ignored.is_empty() {
        tracing::debug!(flags = ?inv.ignored, "sendmail: ignoring these traditional flags");
    }
    let path = config_path(inv.config.clone());
    if inv.mode == Mode::ListQueue {
        return super::queue::run(super::args::QueueArgs::mailq_with(Some(path)));
    }
    let local = match super::local_config(Some(path.clone()), "sendmail", EX_CONFIG) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if inv.mode == Mode::Nothing {
        return ExitCode::SUCCESS;
    }
    if local.submit_addrs.is_empty() {
        eprintln!(
            "sendmail: {}: the relay has no plain listener (listen.addrs or \
             listen.no_starttls_addrs) to hand the message to",
            path.display()
        );
        return ExitCode::from(EX_CONFIG);
    }
    let defaults = Defaults {
        hostname: local.hostname.clone(),
        user: Defaults::login_name(),
        admin_address: local.admin_address.clone(),
    };
    let result = sendmail::read_message(std::io::stdin().lock(), inv.dot_ends)
        .and_then(|message| sendmail::prepare(&inv, message, &defaults))
        .and_then(|sub| {
            super::block_on(sendmail::submit(&local.submit_addrs, &local.hostname, &sub))
        });
    match result {
        Ok(reply) => {
            tracing::debug!(%reply, "sendmail: handed to the relay");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn fail(e: &sendmail::SendmailError) -> ExitCode {
    eprintln!("sendmail: {e}");
    ExitCode::from(e.exit_code())
}
