//! Relay policy: pure decisions about who may relay and within which limits, and which
//! account carries a message.
//!
//! No I/O and no state: each function takes the facts (client address, declared size,
//! recipient count, envelope sender) and returns `Ok` or the [`Rejection`] to send, or the
//! account's name ([`Router`]). The intake owns the conversation; this module owns the rules,
//! so they can be read and tested as tables.
//!
//! Invariant: a client outside `listen.allowed_networks` is refused before it can say anything
//! (`554 5.7.1`). There is no setting that makes the relay open to everyone by accident.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{AccountConfig, DEFAULT_ACCOUNT, ListenConfig, SenderPattern};

/// A refusal: the SMTP reply code, enhanced status code and text to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Basic reply code, e.g. 554.
    pub code: u16,
    /// Enhanced status code, e.g. "5.7.1".
    pub status: &'static str,
    /// Human-readable text.
    pub text: String,
}

impl Rejection {
    fn new(code: u16, status: &'static str, text: impl Into<String>) -> Self {
        Rejection {
            code,
            status,
            text: text.into(),
        }
    }
}

/// The rules for one listener configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    allowed_networks: Vec<IpNet>,
    allowed_senders: Vec<String>,
    allowed_recipients: Vec<String>,
    max_message_size: usize,
    max_recipients: usize,
}

impl Policy {
    /// Rules from the `[listen]` section.
    pub fn new(cfg: &ListenConfig) -> Self {
        Policy {
            allowed_networks: cfg.allowed_networks.clone(),
            allowed_senders: cfg.allowed_senders.clone(),
            allowed_recipients: cfg.allowed_recipients.clone(),
            max_message_size: cfg.max_message_size,
            max_recipients: cfg.max_recipients,
        }
    }

    /// May this envelope sender (empty for `<>`) use the relay? Always yes without
    /// `listen.allowed_senders`.
    pub fn sender(&self, sender: &str) -> Result<(), Rejection> {
        let shown = if sender.is_empty() { "<>" } else { sender };
        if listed(&self.allowed_senders, shown) {
            Ok(())
        } else {
            Err(Rejection::new(
                550,
                "5.7.1",
                format!("Sender {shown} is not allowed to send through this relay"),
            ))
        }
    }

    /// May mail go to this recipient? Always yes without `listen.allowed_recipients`.
    pub fn recipient(&self, recipient: &str) -> Result<(), Rejection> {
        if listed(&self.allowed_recipients, recipient) {
            Ok(())
        } else {
            Err(Rejection::new(
                550,
                "5.7.1",
                format!("Recipient {recipient} is not allowed through this relay"),
            ))
        }
    }

    /// May this client relay at all? IPv4 clients seen through an IPv6 socket
    /// (`::ffff:192.0.2.1`) are matched as the IPv4 address they are.
    pub fn client(&self, ip: IpAddr) -> Result<(), Rejection> {
        let ip = ip.to_canonical();
        if self.allowed_networks.iter().any(|net| net.contains(&ip)) {
            Ok(())
        } else {
            Err(Rejection::new(
                554,
                "5.7.1",
                // The setting is named in the log, not to the client.
                format!("Relay access denied for {ip}"),
            ))
        }
    }

    /// A size declared with `MAIL FROM:<..> SIZE=n`.
    pub fn declared_size(&self, size: u64) -> Result<(), Rejection> {
        if size > self.max_message_size as u64 {
            Err(self.too_big())
        } else {
            Ok(())
        }
    }

    /// The reply for a message over the size limit.
    pub fn too_big(&self) -> Rejection {
        Rejection::new(
            552,
            "5.3.4",
            format!(
                "Message too big: the limit is {} bytes",
                self.max_message_size
            ),
        )
    }

    /// The most bytes of message data accepted.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// May one more recipient be added to a transaction that has `count` already?
    pub fn another_recipient(&self, count: usize) -> Result<(), Rejection> {
        if count >= self.max_recipients {
            Err(Rejection::new(
                452,
                "4.5.3",
                format!(
                    "Too many recipients: at most {} per message; send the rest in another",
                    self.max_recipients
                ),
            ))
        } else {
            Ok(())
        }
    }
}

/// Which account carries mail from which envelope sender: each account's `senders`, the most
/// specific pattern winning (an address over its `@domain` over `*`), compared without regard
/// to case. A sender no pattern claims, and the null sender, go to the default account.
#[derive(Debug, Clone)]
pub struct Router {
    addresses: HashMap<String, String>,
    domains: HashMap<String, String>,
    any: Option<String>,
}

impl Router {
    /// The routes of `accounts` (validated: no pattern is claimed twice).
    pub fn new(accounts: &[AccountConfig]) -> Router {
        let mut router = Router {
            addresses: HashMap::new(),
            domains: HashMap::new(),
            any: None,
        };
        for account in accounts {
            for pattern in &account.senders {
                let name = account.name().to_owned();
                match pattern {
                    SenderPattern::Address(a) => {
                        router.addresses.insert(a.clone(), name);
                    }
                    SenderPattern::Domain(d) => {
                        router.domains.insert(d.clone(), name);
                    }
                    SenderPattern::Any => router.any = Some(name),
                }
            }
        }
        router
    }

    /// The account for mail from `sender` (empty for the null sender).
    pub fn route(&self, sender: &str) -> &str {
        if sender.is_empty() {
            return DEFAULT_ACCOUNT;
        }
        let sender = sender.to_lowercase();
        let domain = sender.rsplit_once('@').map(|(_, d)| d);
        self.addresses
            .get(&sender)
            .or_else(|| domain.and_then(|d| self.domains.get(d)))
            .or(self.any.as_ref())
            .map_or(DEFAULT_ACCOUNT, String::as_str)
    }
}

/// Is `address` on the list: exactly (ignoring case), by its `@domain`, or (for `<>`) as the
/// null sender? An empty list allows everything.
fn listed(list: &[String], address: &str) -> bool {
    if list.is_empty() {
        return true;
    }
    let address = address.to_lowercase();
    let domain = address.rsplit_once('@').map(|(_, d)| format!("@{d}"));
    list.iter()
        .any(|entry| *entry == address || Some(entry) == domain.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(nets: &[&str]) -> Policy {
        Policy {
            allowed_networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
            allowed_senders: vec![],
            allowed_recipients: vec![],
            max_message_size: 1000,
            max_recipients: 2,
        }
    }

    #[test]
    fn client_table() {
        let p = policy(&["127.0.0.0/8", "::1/128", "192.168.1.0/24"]);
        let cases = [
            ("127.0.0.1", true),
            ("127.9.9.9", true),
            ("::1", true),
            ("192.168.1.77", true),
            ("::ffff:192.168.1.77", true),
            ("::ffff:127.0.0.1", true),
            ("192.168.2.1", false),
            ("10.0.0.1", false),
            ("::2", false),
            ("::ffff:10.0.0.1", false),
        ];
        for (ip, allowed) in cases {
            let got = p.client(ip.parse().unwrap());
            assert_eq!(got.is_ok(), allowed, "{ip}");
            if let Err(r) = got {
                assert_eq!((r.code, r.status), (554, "5.7.1"));
            }
        }
    }

    #[test]
    fn empty_allowlist_allows_nobody() {
        assert!(policy(&[]).client("127.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn sender_and_recipient_allowlists() {
        let mut p = policy(&[]);
        assert!(
            p.sender("anyone@anywhere.test").is_ok(),
            "no list: everyone"
        );
        assert!(p.sender("").is_ok());
        p.allowed_senders = vec![
            "@example.com".into(),
            "printer@lan.test".into(),
            "<>".into(),
        ];
        p.allowed_recipients = vec!["@example.com".into()];
        let senders = [
            ("app@example.com", true),
            ("App@Example.COM", true),
            ("printer@lan.test", true),
            ("other@lan.test", false),
            ("app@sub.example.com", false),
            ("", true),
            ("evil@example.com.evil.test", false),
        ];
        for (s, ok) in senders {
            let r = p.sender(s);
            assert_eq!(r.is_ok(), ok, "{s:?}");
            if let Err(r) = r {
                assert_eq!((r.code, r.status), (550, "5.7.1"), "permanent, never 451");
            }
        }
        assert!(p.recipient("a@example.com").is_ok());
        assert_eq!(p.recipient("a@gmail.com").unwrap_err().code, 550);
        p.allowed_senders = vec!["@example.com".into()];
        assert!(p.sender("").is_err(), "the null sender only when listed");
    }

    #[test]
    fn routes_by_the_most_specific_pattern() {
        use crate::config::AccountConfig;
        fn account(name: &str, senders: Vec<SenderPattern>) -> AccountConfig {
            let mut up = crate::config::tests_upstream();
            up.name = name.into();
            AccountConfig {
                upstream: up,
                senders,
                failover: vec![],
                max_per_minute: None,
                max_per_day: None,
                rewrite: Default::default(),
            }
        }
        let r = Router::new(&[
            account("default", vec![]),
            account(
                "billing",
                vec![
                    SenderPattern::Address("billing@example.com".into()),
                    SenderPattern::Domain("billing.example.com".into()),
                ],
            ),
            account("alerts", vec![SenderPattern::Domain("example.com".into())]),
            account("home", vec![SenderPattern::Any]),
        ]);
        for (sender, want) in [
            ("billing@example.com", "billing"),
            ("Billing@Example.COM", "billing"),
            ("someone@billing.example.com", "billing"),
            ("other@example.com", "alerts"),
            ("x@sub.billing.example.com", "home"),
            ("nas@home.lan", "home"),
            ("", "default"),
        ] {
            assert_eq!(r.route(sender), want, "{sender:?}");
        }
        let plain = Router::new(&[account("default", vec![])]);
        assert_eq!(plain.route("anyone@anywhere.test"), "default");
    }

    #[test]
    fn limits() {
        let p = policy(&[]);
        assert!(p.declared_size(1000).is_ok());
        assert_eq!(p.declared_size(1001).unwrap_err().status, "5.3.4");
        assert!(p.another_recipient(1).is_ok());
        let r = p.another_recipient(2).unwrap_err();
        assert_eq!((r.code, r.status), (452, "4.5.3"));
    }
}
