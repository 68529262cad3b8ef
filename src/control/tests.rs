//! The control protocol's wire form and the text rendering.

use std::time::{Duration, SystemTime};

use super::*;
use crate::scheduler::PauseStatus;

fn id() -> QueueId {
    QueueId::parse("000660f3818f6b4c").unwrap()
}

#[test]
fn requests_and_replies_survive_the_wire() {
    let requests = [
        Request::List,
        Request::Show {
            id: id(),
            body: true,
        },
        Request::Retry { id: None },
        Request::Retry { id: Some(id()) },
        Request::Delete { id: id() },
        Request::DeleteFailed,
        Request::Hold { id: id() },
        Request::Release { id: id() },
        Request::Requeue {
            id: None,
            account: None,
        },
        Request::Status,
    ];
    for r in requests {
        let line = serde_json::to_string(&r).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r, "{line}");
    }
    assert_eq!(
        serde_json::to_string(&Request::Hold { id: id() }).unwrap(),
        r#"{"op":"hold","id":"000660f3818f6b4c"}"#
    );
    let err = Envelope::Error(ControlError::not_found(id()));
    let line = serde_json::to_string(&err).unwrap();
    match serde_json::from_str::<Envelope>(&line).unwrap() {
        Envelope::Error(e) => {
            assert_eq!(e.kind, ErrorKind::NotFound);
            assert_eq!(e.exit_code(), 3);
        }
        Envelope::Ok(_) => panic!("{line}"),
    }
    assert!(serde_json::from_str::<Request>(r#"{"op":"hold","id":"../../etc"}"#).is_err());
}

#[test]
fn a_pause_is_one_line_with_cause_reason_and_next_probe() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let status = Status {
        pause: Some(PauseStatus {
            account: "default".into(),
            cause: "quota".into(),
            reason: "550 5.4.5 Daily user sending limit exceeded".into(),
            next_probe: now + Duration::from_secs(3600),
        }),
        scheduled: 3,
        active: vec![],
        held: 0,
        on_hold: false,
        oldest: None,
        accounts: vec![],
        missing: vec![],
    };
    let line = render_status(Some(&status), true, now);
    assert_eq!(
        line,
        "delivery PAUSED (quota): 550 5.4.5 Daily user sending limit exceeded; next probe \
         2027-01-15T09:00:00Z (in 1h)"
    );
    assert_eq!(render_status(None, true, now), "relay running");
    assert!(render_status(None, false, now).starts_with("relay not running"));
}

#[test]
fn an_empty_queue_says_so() {
    let listing = Listing {
        running: true,
        status: None,
        messages: vec![],
    };
    assert_eq!(
        render_list(&listing, SystemTime::now()),
        "relay running\nqueue is empty\n"
    );
}
