//! Every row of the reply table in ../shared/reference/gmail-facts.md §4, classified at the
//! stage Gmail sends it.

use super::Class::*;
use super::Stage::*;
use super::*;

#[test]
fn gmail_reply_table() {
    let rows: &[(Stage, u16, &str, Class)] = &[
        (
            EndOfData,
            421,
            "4.3.0 Temporary System Problem.  Try again later (10). - gsmtp",
            Reconnect,
        ),
        (
            Greeting,
            421,
            "4.4.5 Server busy, try again later. - gsmtp",
            Reconnect,
        ),
        (
            Ehlo,
            421,
            "4.7.0 Try again later, closing connection. (EHLO) - gsmtp",
            Reconnect,
        ),
        (
            Mail,
            421,
            "4.7.0 Connection expired, try reconnecting. - gsmtp",
            Reconnect,
        ),
        (
            EndOfData,
            421,
            "4.7.0 This message is suspicious due to the very low reputation of the sending IP address. - gsmtp",
            Reconnect,
        ),
        (
            Rcpt,
            421,
            "4.7.0 TLS required for RCPT domain, closing connection. - gsmtp",
            Reconnect,
        ),
        (
            EndOfData,
            421,
            "4.7.26 This mail has been rate limited because it is unauthenticated. - gsmtp",
            Reconnect,
        ),
        (
            EndOfData,
            421,
            "4.7.28 Our system has detected an unusual rate of unsolicited mail with the same Message-ID. - gsmtp",
            Reconnect,
        ),
        (
            Rcpt,
            450,
            "4.2.1 The user you are trying to contact is receiving mail too quickly. - gsmtp",
            Retry,
        ),
        (
            Mail,
            450,
            "4.2.1 Peak SMTP relay limit exceeded for customer. This is a temporary error. - gsmtp",
            PauseQuota,
        ),
        (
            EndOfData,
            451,
            "4.3.0 Mail server temporarily rejected message. - gsmtp",
            Retry,
        ),
        (
            Rcpt,
            451,
            "4.3.0 Multiple destination domains per transaction is unsupported. Please try again. - gsmtp",
            Retry,
        ),
        (
            Mail,
            451,
            "4.4.2 Timeout - closing connection. - gsmtp",
            Reconnect,
        ),
        (
            Mail,
            451,
            "4.5.0 SMTP protocol violation, see RFC 2821. - gsmtp",
            Reconnect,
        ),
        (
            Mail,
            454,
            "4.5.0 SMTP protocol violation, no commands allowed to pipeline after STARTTLS. - gsmtp",
            Reconnect,
        ),
        (
            Rcpt,
            452,
            "4.2.2 The email account that you tried to reach is over quota. - gsmtp",
            Retry,
        ),
        (
            Rcpt,
            452,
            "4.5.3 Your message has too many recipients. - gsmtp",
            Retry,
        ),
        (
            Rcpt,
            452,
            "4.5.3 Domain policy size per transaction exceeded, please try this recipient in a separate transaction. - gsmtp",
            Retry,
        ),
        (
            Auth,
            454,
            "4.7.0 Too many login attempts, please try again later. - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            454,
            "4.7.0 Cannot authenticate due to a temporary system problem. Try again later. - gsmtp",
            PauseUpstream,
        ),
        (
            StartTls,
            454,
            "5.5.1 STARTTLS may not be repeated. - gsmtp",
            Reconnect,
        ),
        (
            Ehlo,
            501,
            "5.5.4 HELO/EHLO argument is invalid. - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            501,
            "5.5.2 Syntax error, cannot decode response. - gsmtp",
            PauseUpstream,
        ),
        (
            Mail,
            503,
            "5.5.1 Bad sequence of commands. - gsmtp",
            Reconnect,
        ),
        (
            Auth,
            503,
            "5.7.0 No identity changes permitted. - gsmtp",
            Reconnect,
        ),
        (
            Auth,
            504,
            "5.7.4 Unrecognized Authentication Type. - gsmtp",
            PauseUpstream,
        ),
        (
            Mail,
            530,
            "5.7.0 Must issue a STARTTLS command first. - gsmtp",
            PauseUpstream,
        ),
        (
            Mail,
            530,
            "5.5.1 Authentication Required. - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            534,
            "5.7.9 Application-specific password required. Learn more at https://support.google.com/mail/?p=InvalidSecondFactor - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            534,
            "5.7.14 <https://accounts.google.com/signin/continue?sarp=1> Please log in via your web browser and then try again. - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            535,
            "5.7.8 Username and Password not accepted. Learn more at https://support.google.com/mail/?p=BadCredentials - gsmtp",
            PauseUpstream,
        ),
        (
            Auth,
            535,
            "5.7.1 Username and Password not accepted. - gsmtp",
            PauseUpstream,
        ),
        (
            EndOfData,
            550,
            "5.4.5 Daily user sending limit exceeded. For more information on Gmail sending limits go to https://support.google.com/a/answer/166852 - gsmtp",
            PauseQuota,
        ),
        (
            EndOfData,
            550,
            "5.4.5 Daily sending quota exceeded. - gsmtp",
            PauseQuota,
        ),
        (
            Mail,
            550,
            "5.4.5 Daily SMTP relay limit exceeded for user. - gsmtp",
            PauseQuota,
        ),
        (
            Rcpt,
            550,
            "5.7.1 Daily SMTP relay limit exceeded for customer. - gsmtp",
            PauseQuota,
        ),
        (
            Mail,
            550,
            "5.7.0 Mail relay denied 192.0.2.1. Invalid credentials for relay for one of the domains in: example.com - gsmtp",
            PauseUpstream,
        ),
        (
            Mail,
            550,
            "5.7.1 Invalid credentials for relay 192.0.2.1. The IP address you've registered doesn't match. - gsmtp",
            PauseUpstream,
        ),
        (
            Mail,
            550,
            "5.7.0 Mail Sending denied. This account is disabled. - gsmtp",
            PauseUpstream,
        ),
        (
            EndOfData,
            550,
            "5.7.26 This mail is unauthenticated, which poses a security risk to the sender and Gmail users. - gsmtp",
            FailMessage,
        ),
        (
            EndOfData,
            550,
            "5.7.1 Messages missing a valid Message-ID header are not accepted. - gsmtp",
            FailMessage,
        ),
        (
            EndOfData,
            550,
            "5.7.1 Our system has detected that this message is likely unsolicited mail. - gsmtp",
            FailMessage,
        ),
        (
            Rcpt,
            550,
            "5.1.1 The email account that you tried to reach does not exist. - gsmtp",
            FailRecipient,
        ),
        (
            Rcpt,
            550,
            "5.2.1 The email account that you tried to reach is disabled. - gsmtp",
            FailRecipient,
        ),
        (
            EndOfData,
            552,
            "5.2.3 Your message exceeded Google's message size limits. - gsmtp",
            FailMessage,
        ),
        (
            Mail,
            552,
            "5.3.4 Your message exceeded Google's message size limits. - gsmtp",
            FailMessage,
        ),
        (
            EndOfData,
            552,
            "5.7.0 This message was blocked because its content presents a potential security issue. - gsmtp",
            FailMessage,
        ),
        (
            Rcpt,
            553,
            "5.1.2 We weren't able to find the recipient domain. - gsmtp",
            FailRecipient,
        ),
        (
            Rcpt,
            553,
            "5.1.3 The recipient address is not a valid RFC 5321 address. - gsmtp",
            FailRecipient,
        ),
        (
            Mail,
            553,
            "5.1.7 The sender address is not a valid RFC 5321 address. - gsmtp",
            FailMessage,
        ),
        (
            EndOfData,
            554,
            "5.6.0 Mail message is malformed. Not accepted. - gsmtp",
            FailMessage,
        ),
        (
            EndOfData,
            554,
            "5.4.6 Message exceeded 50 hops, this may indicate a mail loop. - gsmtp",
            FailMessage,
        ),
        (
            Mail,
            554,
            "5.7.0 Too many unauthenticated commands. - gsmtp",
            Reconnect,
        ),
    ];
    for &(stage, code, text, want) in rows {
        assert_eq!(classify(stage, code, text), want, "{stage:?} {code} {text}");
    }
}

#[test]
fn successes_and_unknowns() {
    assert_eq!(classify(EndOfData, 250, "2.0.0 OK - gsmtp"), Ok);
    assert_eq!(
        classify(Rcpt, 451, "4.9.9 something new"),
        Retry,
        "unknown 4xx is temporary"
    );
    assert_eq!(classify(Rcpt, 599, "5.9.9 something new"), FailRecipient);
    assert_eq!(
        classify(Greeting, 554, "5.7.1 go away"),
        PauseUpstream,
        "a refusal before any mail stops everything"
    );
}

#[test]
fn too_many_recipients_is_recognised() {
    assert!(too_many_recipients(
        452,
        "4.5.3 Your message has too many recipients.",
        0
    ));
    assert!(!too_many_recipients(452, "4.2.2 over quota", 0));
    assert!(!too_many_recipients(552, "4.5.3", 3));
    assert!(
        too_many_recipients(452, "too many recipients", 1),
        "Exim's bare 452 after an accepted recipient"
    );
    assert!(
        !too_many_recipients(452, "too many recipients", 0),
        "before any is accepted it is about this recipient"
    );
    assert!(
        too_many_recipients(
            451,
            "4.3.0 Multiple destination domains per transaction is unsupported. Please try again.",
            2
        ),
        "the Workspace relay service: the other domains go in the next transaction"
    );
}

#[test]
fn a_refused_starttls_is_tls_not_credentials() {
    assert_eq!(
        classify(
            StartTls,
            454,
            "4.7.0 TLS not available due to temporary reason"
        ),
        PauseTls
    );
    assert_eq!(classify(StartTls, 554, "5.7.3 no TLS for you"), PauseTls);
    assert_eq!(classify(StartTls, 421, "4.7.0 closing"), Reconnect);
}

#[test]
fn a_broken_connection_reconnects() {
    assert_eq!(Failure::Broken("reset".into()).class(EndOfData), Reconnect);
    let f = Failure::Reply {
        code: 550,
        text: "5.1.1 no".into(),
    };
    assert_eq!(f.class(Rcpt), FailRecipient);
    assert_eq!(f.describe(), "550 5.1.1 no");
}
