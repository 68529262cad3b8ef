//! The accounts: `[upstream]` as the account `default`, then each `[accounts.NAME]` with what
//! it leaves out inherited from `[upstream]` (never its identity), its `senders` patterns,
//! `failover` list, budget and rewrites, and the checks across accounts (names, one owner per
//! pattern, failover lists that exist and never lead back).

use std::collections::HashMap;
use std::path::Path;

use super::upstream::upstream;
use super::{Result, invalid, rate};
use crate::config::raw::{List, Raw, RawUpstream};
use crate::config::{AccountConfig, DEFAULT_ACCOUNT, RewriteConfig, SenderPattern};

pub(super) fn accounts(raw: &Raw, base: &Path) -> Result<Vec<AccountConfig>> {
    if raw.upstream.rewrite.is_some() {
        return invalid(
            "upstream.rewrite",
            "is not a key; the default account's rewrites are the [rewrite] section",
        );
    }
    let global_rewrite = super::delivery::rewrite(raw.rewrite.clone(), "rewrite")?;
    let mut accounts = vec![account(
        raw.upstream.clone(),
        raw,
        base,
        DEFAULT_ACCOUNT,
        "upstream",
        global_rewrite,
    )?];
    for (name, acct) in &raw.accounts {
        let section = format!("accounts.{name}");
        if name == DEFAULT_ACCOUNT {
            return invalid(
                &section,
                "\"default\" is the name of [upstream]; give this account another name",
            );
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return invalid(
                &section,
                format!(
                    "{name:?} is not an account name: use lower-case letters, digits and '_' \
                     (so that GMAIL_RELAY__ACCOUNTS__{}__PASSWORD can set its password)",
                    name.to_uppercase()
                ),
            );
        }
        let merged = acct.clone().inheriting(&raw.upstream);
        accounts.push(account(merged, raw, base, name, &section, global_rewrite)?);
    }
    claims_are_unique(&accounts)?;
    failover_is_sound(&accounts)?;
    Ok(accounts)
}

fn account(
    raw: RawUpstream,
    top: &Raw,
    base: &Path,
    name: &str,
    section: &str,
    global_rewrite: RewriteConfig,
) -> Result<AccountConfig> {
    let key = |k: &str| format!("{section}.{k}");
    let senders = senders(&key("senders"), raw.senders.clone())?;
    let failover = raw
        .failover
        .clone()
        .map(List::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.trim().to_owned())
        .collect();
    let max_per_minute = rate(&key("max_per_minute"), raw.max_per_minute)?;
    let max_per_day = rate(&key("max_per_day"), raw.max_per_day)?;
    let rewrite = match raw.rewrite.clone() {
        Some(r) => super::delivery::rewrite(r, &key("rewrite"))?,
        None => global_rewrite,
    };
    let upstream = upstream(raw, base, name, section)?;
    if upstream.impersonate_sender {
        if name == DEFAULT_ACCOUNT {
            return invalid(
                &key("impersonate_sender"),
                "cannot be set on the default account, which also carries the null sender and \
                 every sender no account claims; put the service account that logs in as each \
                 sender in [accounts.NAME] with its senders (e.g. [\"@example.com\"])",
            );
        }
        if senders.is_empty() || senders.contains(&SenderPattern::Any) {
            return invalid(
                &key("senders"),
                "must name the addresses or @domains whose senders log in as themselves \
                 (impersonate_sender = true); * is not allowed there",
            );
        }
    }
    if upstream.username.is_empty() && (rewrite.envelope_from || rewrite.header_from) {
        return invalid(
            &key("username"),
            "is needed for the rewrites to the account (rewrite = \"account\"); set it to the \
             address mail should come from",
        );
    }
    Ok(AccountConfig {
        upstream,
        senders,
        failover,
        max_per_minute: max_per_minute.or(rate(
            "delivery.max_per_minute",
            top.delivery.max_per_minute,
        )?),
        max_per_day: max_per_day.or(rate("delivery.max_per_day", top.delivery.max_per_day)?),
        rewrite,
    })
}

/// `senders`: addresses, `@domain`s and `*`, lower-cased.
fn senders(key: &str, raw: Option<List>) -> Result<Vec<SenderPattern>> {
    let items = raw.map(List::into_vec).unwrap_or_default();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let item = item.trim().to_lowercase();
            let bad = |why: &str| invalid(&format!("{key}[{i}]"), format!("{item:?} {why}"));
            if item == "*" {
                return Ok(SenderPattern::Any);
            }
            match item.rsplit_once('@') {
                Some(("", domain)) if valid_domain(domain) => {
                    Ok(SenderPattern::Domain(domain.to_owned()))
                }
                Some((local, domain))
                    if !local.is_empty()
                        && valid_domain(domain)
                        && !local.contains(char::is_whitespace) =>
                {
                    Ok(SenderPattern::Address(item.clone()))
                }
                _ => bad("is not an address (billing@example.com), a domain (@example.com) or *"),
            }
        })
        .collect()
}

fn valid_domain(domain: &str) -> bool {
    !domain.is_empty() && !domain.contains(['@', ' ', '\t']) && !domain.starts_with('.')
}

/// Two accounts claiming the same pattern would make the route depend on their order.
fn claims_are_unique(accounts: &[AccountConfig]) -> Result<()> {
    let mut owner: HashMap<&SenderPattern, &str> = HashMap::new();
    for account in accounts {
        for (i, pattern) in account.senders.iter().enumerate() {
            if let Some(other) = owner.insert(pattern, account.name())
                && other != account.name()
            {
                return invalid(
                    &format!("{}.senders[{i}]", account.upstream.section),
                    format!(
                        "{pattern} is claimed by the accounts {other:?} and {:?}; a sender \
                         pattern belongs to one account",
                        account.name()
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Every failover account exists, and no list leads back to the account itself.
fn failover_is_sound(accounts: &[AccountConfig]) -> Result<()> {
    let by_name: HashMap<&str, &AccountConfig> = accounts.iter().map(|a| (a.name(), a)).collect();
    for account in accounts {
        let key = format!("{}.failover", account.upstream.section);
        for (i, target) in account.failover.iter().enumerate() {
            if !by_name.contains_key(target.as_str()) {
                let known: Vec<&str> = accounts.iter().map(AccountConfig::name).collect();
                return invalid(
                    &format!("{key}[{i}]"),
                    format!(
                        "{target:?} is not an account (the accounts are {})",
                        known.join(", ")
                    ),
                );
            }
        }
        // Depth-first through the failover lists: reaching the account again is a loop.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(account.name(), vec![account.name()])];
        while let Some((name, path)) = stack.pop() {
            for next in &by_name[name].failover {
                if next == account.name() {
                    let mut shown = path.clone();
                    shown.push(next);
                    return invalid(
                        &key,
                        format!(
                            "leads back to {:?} ({}); failover must not loop",
                            account.name(),
                            shown.join(" → ")
                        ),
                    );
                }
                if !path.contains(&next.as_str()) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push((next, longer));
                }
            }
        }
    }
    Ok(())
}
