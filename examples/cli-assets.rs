//! Writes the manual pages and shell completions from the command line's definition, for the
//! Debian package (`debian/build`) or any other install:
//!
//! ```sh
//! cargo run --example cli-assets -- OUT_DIR
//! ```
//!
//! makes `OUT_DIR/man/gmail-relay.8` (plus one page per subcommand, which its SUBCOMMANDS
//! section refers to), `OUT_DIR/bash/gmail-relay`, `OUT_DIR/zsh/_gmail-relay` and
//! `OUT_DIR/fish/gmail-relay.fish`, named as Debian installs them.
//!
//! An example rather than a build script or a hidden subcommand: clap_mangen and clap_complete
//! stay dev-dependencies, out of the release binary and out of an ordinary `cargo build`.

// The binary's own definition, so the pages cannot drift from `--help`.
#[path = "../src/cli/args.rs"]
#[allow(dead_code)] // `QueueArgs::mailq_with` is for the binary.
mod args;

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use roff::{Roff, bold, italic, roman};

/// Section 8 (the binary is in /usr/sbin), and the version on every page: clap_mangen takes it
/// from the command, and subcommands have none of their own.
fn page(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .section("8")
        .source(concat!("gmail-relay ", env!("CARGO_PKG_VERSION")))
        .manual("gmail-relay")
}

fn main() -> io::Result<()> {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: cargo run --example cli-assets -- OUT_DIR");
        std::process::exit(2);
    };
    let out = Path::new(&out);
    let mut cmd = args::Cli::command().disable_help_subcommand(true);
    // Gives every subcommand its display name (gmail-relay-queue-list), which the pages use.
    cmd.build();

    let man = out.join("man");
    fs::create_dir_all(&man)?;
    main_page(&cmd, &mut File::create(man.join("gmail-relay.8"))?)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        sub_pages(sub.clone(), &man)?;
    }

    for (shell, dir, name) in [
        (Shell::Bash, "bash", "gmail-relay"),
        (Shell::Zsh, "zsh", "_gmail-relay"),
        (Shell::Fish, "fish", "gmail-relay.fish"),
    ] {
        fs::create_dir_all(out.join(dir))?;
        let mut file = File::create(out.join(dir).join(name))?;
        clap_complete::generate(shell, &mut cmd, "gmail-relay", &mut file);
    }
    Ok(())
}

fn sub_pages(cmd: clap::Command, dir: &Path) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        sub_pages(sub.clone(), dir)?;
    }
    page(cmd).generate_to(dir)?;
    Ok(())
}

/// gmail-relay(8): clap's sections, with what `--help` cannot say in between (what the relay
/// is, the names it answers to, its files and environment, exit codes).
fn main_page(cmd: &clap::Command, w: &mut dyn Write) -> io::Result<()> {
    let man = page(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;

    let mut r = Roff::new();
    r.control("SH", ["DESCRIPTION"]);
    r.text([
        bold("gmail-relay"),
        roman(
            " is a local SMTP relay (smart host). Applications and devices hand it plain SMTP \
             on the addresses in listen.addrs; it writes each message to a spool on disk before \
             it answers 250, and forwards it to Gmail (smtp.gmail.com) over verified TLS, \
             logging in with an app password, OAuth2 or a Workspace service account, or \
             through the Gmail API where SMTP ports are blocked. Several accounts can be routed \
             by sender, and replicas can share their budgets through Redis. It retries through \
             Gmail's temporary errors, and keeps mail queued rather than bouncing it while the \
             login or the daily quota fails.",
        ),
    ]);
    r.control("PP", []);
    r.text([roman(
        "The relay runs as a systemd service (gmail-relay.service); the other subcommands \
         check its configuration, inspect and change its queue, and hand it mail.",
    )]);
    r.to_writer(w)?;

    man.render_options_section(w)?;
    man.render_subcommands_section(w)?;

    let mut r = Roff::new();
    r.control("SH", ["SENDMAIL, MAILQ AND NEWALIASES"]);
    r.text([
        roman("Invoked as "),
        bold("sendmail"),
        roman(
            " (the package links /usr/sbin/sendmail to it) it reads a message on standard \
             input and hands it to the running relay over SMTP on its local listener, as ",
        ),
        bold("gmail-relay sendmail"),
        roman(" does; it finds the relay through the configuration file (see "),
        bold("ENVIRONMENT"),
        roman("). It takes sendmail's flags:"),
    ]);
    for (flags, text) in [
        (
            "-t",
            "Also read recipients from To:, Cc: and Bcc: (added to those given as arguments); \
             Bcc: is removed.",
        ),
        (
            "-f ADDRESS, -r ADDRESS",
            "The envelope sender (default: the From: address, else the user at \
             listen.hostname).",
        ),
        (
            "-F NAME",
            "The full name for the From: field added when there is none.",
        ),
        (
            "-i, -oi",
            "A line with only a dot does not end the message.",
        ),
        ("-bp", "List the queue, as mailq does."),
        ("-bi", "Nothing (there is no alias database)."),
        ("-C FILE, --config FILE", "The configuration file."),
        (
            "-N never",
            "No delivery status notification if the message fails.",
        ),
    ] {
        r.control("TP", []);
        r.text([bold(flags)]);
        r.text([roman(text)]);
    }
    r.control("PP", []);
    r.text([roman(
        "Other traditional flags (-oem, -odi, -B 8BITMIME, -v, other -N values) are accepted \
         and ignored. Local users without a domain (root, the owner of a cron job) get mail at \
         sendmail.admin_address. The exit status follows sysexits: 0 queued, 75 (EX_TEMPFAIL) \
         when the relay is not running or asks to try later, 64 usage, 65 no recipients or \
         too large, 67 recipient refused, 69 refused, 77 not allowed, 78 configuration.",
    )]);
    r.control("PP", []);
    r.text([
        roman("Invoked as "),
        bold("mailq"),
        roman(" it lists the queue ("),
        bold("gmail-relay queue list"),
        roman("). Invoked as "),
        bold("newaliases"),
        roman(" it does nothing and exits 0: there is no alias database to rebuild."),
    ]);

    r.control("SH", ["FILES"]);
    for (path, text) in [
        (
            "/etc/gmail-relay/relay.toml",
            "The configuration: listeners, spool, Gmail account. Every key, with its default, \
             is described in /usr/share/doc/gmail-relay/examples/relay.toml.",
        ),
        (
            "/etc/gmail-relay/gmail-password",
            "The Gmail app password (mode 0600), which the service reads as a systemd \
             credential. The service does not start until this file exists.",
        ),
        (
            "/var/lib/gmail-relay",
            "The spool (queue.dir): queue/, failed/, and the control socket the queue commands \
             use. With the service's dynamic user it is a link to /var/lib/private/gmail-relay.",
        ),
    ] {
        r.control("TP", []);
        r.text([italic(path)]);
        r.text([roman(text)]);
    }

    r.control("SH", ["ENVIRONMENT"]);
    for (name, text) in [
        (
            "GMAIL_RELAY_CONFIG",
            "The configuration file of the local commands (sendmail, mailq, queue, health, \
             send-test) when --config is not given; else /etc/gmail-relay/relay.toml.",
        ),
        (
            "GMAIL_RELAY__SECTION__KEY",
            "Sets any configuration key, e.g. GMAIL_RELAY__UPSTREAM__USERNAME or \
             GMAIL_RELAY__UPSTREAM__PASSWORD_FILE.",
        ),
        ("RUST_LOG", "The log filter, e.g. debug."),
    ] {
        r.control("TP", []);
        r.text([bold(name)]);
        r.text([roman(text)]);
    }

    r.control("SH", ["EXIT STATUS"]);
    r.text([roman(
        "0 success, 1 runtime failure (spool in use, port taken, the relay not running), 2 \
         configuration or usage error, 3 no such message, 4 message busy; sendmail uses \
         sysexits (above).",
    )]);

    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "systemctl(1), systemd.exec(5), journalctl(1), \
         /usr/share/doc/gmail-relay/README.md.gz, /usr/share/doc/gmail-relay/README.Debian",
    )]);
    r.to_writer(w)?;

    man.render_version_section(w)
}
