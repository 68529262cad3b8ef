//! The command lines and messages that cron, PHP, mdadm, smartd and git send-email produce.

use super::*;

fn args(line: &str) -> Invocation {
    parse_args(line.split_whitespace().map(str::to_owned)).unwrap()
}

fn defaults() -> Defaults {
    Defaults {
        hostname: "host.example".into(),
        user: "alice".into(),
        admin_address: None,
    }
}

#[test]
fn the_command_lines_programs_use() {
    // cron (Debian): sendmail -FCronDaemon -i -B8BITMIME -oem alice
    let cron = args("-FCronDaemon -i -B8BITMIME -oem alice");
    assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
    assert!(!cron.dot_ends);
    assert_eq!(cron.recipients, ["alice"]);
    assert_eq!(cron.ignored, ["-B 8BITMIME", "-oem"]);
    // PHP mail(): sendmail -t -i (plus -f from the fifth parameter)
    let php = args("-t -i -f www@example.com");
    assert!(php.from_headers && !php.dot_ends);
    assert_eq!(php.sender.as_deref(), Some("www@example.com"));
    // git send-email: sendmail -i -f a@x -- b@y c@z (the -f may be glued)
    let git = args("-i -fa@x -- b@y -c@z");
    assert_eq!(git.sender.as_deref(), Some("a@x"));
    assert_eq!(git.recipients, ["b@y", "-c@z"]);
    // grouped flags, -oi, -r, the config file, -bp
    let grouped = args("-ti -oi -r <> -C /etc/relay.toml");
    assert!(grouped.from_headers && !grouped.dot_ends);
    assert_eq!(grouped.sender.as_deref(), Some("<>"));
    assert_eq!(
        grouped.config.as_deref(),
        Some(std::path::Path::new("/etc/relay.toml"))
    );
    assert_eq!(args("-bp").mode, Mode::ListQueue);
    assert_eq!(
        args("--config=/x.toml -bm a@x").config.unwrap().to_str(),
        Some("/x.toml")
    );
    assert_eq!(args("-v -odi -N never -U a@x").recipients, ["a@x"]);
    assert!(matches!(
        parse_args(["-bs".to_owned()]),
        Err(SendmailError::Usage(_))
    ));
    assert!(matches!(
        parse_args(["-f".to_owned()]),
        Err(SendmailError::Usage(_))
    ));
}

#[test]
fn a_lone_dot_ends_the_message_unless_i() {
    let input = b"Subject: s\n\nline\n.\nafter\n";
    assert_eq!(
        read_message(&input[..], true).unwrap(),
        b"Subject: s\r\n\r\nline\r\n"
    );
    assert_eq!(
        read_message(&input[..], false).unwrap(),
        b"Subject: s\r\n\r\nline\r\n.\r\nafter\r\n"
    );
    assert_eq!(
        read_message(&b"no newline"[..], true).unwrap(),
        b"no newline\r\n"
    );
    assert_eq!(read_message(&b"crlf\r\n"[..], true).unwrap(), b"crlf\r\n");
}

#[test]
fn minus_t_reads_to_cc_and_bcc_and_removes_bcc() {
    let msg = b"From: App <app@example.com>\r\nTo: a@x, \"B, b\" <b@x>\r\nCc: c@x\r\nBcc: secret@x,\r\n  a@x\r\nSubject: s\r\n\r\nBcc: body@x\r\n".to_vec();
    let sub = prepare(&args("-t extra@x"), msg, &defaults()).unwrap();
    assert_eq!(sub.recipients, ["extra@x", "a@x", "b@x", "c@x", "secret@x"]);
    assert_eq!(sub.sender, "app@example.com", "From: is the default sender");
    let text = String::from_utf8(sub.message).unwrap();
    assert!(!text.contains("secret@x"), "{text}");
    assert!(text.contains("Bcc: body@x"), "the body is untouched");
    assert!(
        text.starts_with("From: App <app@example.com>\r\n"),
        "{text}"
    );
}

#[test]
fn without_minus_t_the_headers_are_not_recipients() {
    let msg = b"To: a@x\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
    let sub = prepare(&args("b@y"), msg.clone(), &defaults()).unwrap();
    assert_eq!(sub.recipients, ["b@y"]);
    let err = prepare(&args("-i"), msg, &defaults()).unwrap_err();
    assert_eq!(err.exit_code(), 65, "{err}");
}

#[test]
fn a_from_is_added_with_the_full_name_and_the_sender_is_qualified() {
    let msg = b"Subject: cron\r\n\r\nout\r\n".to_vec();
    let sub = prepare(&args("-FCronDaemon -f root a@x"), msg.clone(), &defaults()).unwrap();
    assert_eq!(sub.sender, "root@host.example");
    assert!(
        sub.message
            .starts_with(b"From: \"CronDaemon\" <root@host.example>\r\nSubject: cron\r\n")
    );
    let sub = prepare(&args("a@x"), msg.clone(), &defaults()).unwrap();
    assert_eq!(sub.sender, "alice@host.example");
    assert!(sub.message.starts_with(b"From: alice@host.example\r\n"));
    let null = prepare(&args("-f <> a@x"), msg, &defaults()).unwrap();
    assert_eq!(null.sender, "");
}

#[test]
fn local_users_go_to_the_admin_address_or_are_refused() {
    let msg = b"Subject: smartd\r\n\r\ndisk\r\n".to_vec();
    let err = prepare(&args("root"), msg.clone(), &defaults()).unwrap_err();
    assert_eq!(err.exit_code(), 67);
    assert!(err.to_string().contains("sendmail.admin_address"), "{err}");
    let with_admin = Defaults {
        admin_address: Some("ops@example.com".into()),
        ..defaults()
    };
    let sub = prepare(&args("root alice ops@example.com"), msg, &with_admin).unwrap();
    assert_eq!(sub.recipients, ["ops@example.com"], "each recipient once");
}
