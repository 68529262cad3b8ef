//! Unknown keys, explained: the parser's "unknown field `pasword`, expected one of ... for key
//! `upstream`" becomes the full key, the likely intended one, and the environment variable
//! when that is where the key came from.
//!
//! A misspelt key is the most common configuration mistake, and the parser's list of 26
//! names leaves the reader to find the one they meant. Only the wording changes: the error is
//! still an error, and a message this module does not recognise passes through unchanged.

use super::ENV_PREFIX;

/// The parser's `message`, rewritten if it is about an unknown key. `env_names` are the
/// environment variables in force (their names), to say when one of them set the key.
pub(super) fn explain(message: &str, env_names: &[String]) -> String {
    parse(message).map_or_else(|| message.to_owned(), |u| u.describe(env_names))
}

/// One unknown key, as the parser reports it.
#[derive(Debug, PartialEq)]
struct Unknown<'a> {
    /// The unknown name, as written.
    name: &'a str,
    /// The names allowed where it was written.
    expected: Vec<&'a str>,
    /// The table it was written in (`upstream`, `accounts.billing`); `None` at the top.
    table: Option<&'a str>,
}

/// Reads "unknown field `X`, expected one of `a`, `b` for key `T`" (also "expected `a`", and
/// without the "for key" part at the top level).
fn parse(message: &str) -> Option<Unknown<'_>> {
    let rest = message.strip_prefix("unknown field `")?;
    let (name, rest) = rest.split_once('`')?;
    let rest = rest
        .strip_prefix(", expected one of ")
        .or_else(|| rest.strip_prefix(", expected "))?;
    let (list, table) = match rest.rsplit_once(" for key `") {
        Some((list, key)) => (list, Some(key.strip_suffix('`')?)),
        None => (rest, None),
    };
    let expected = list
        .split(", ")
        .map(|item| item.strip_prefix('`')?.strip_suffix('`'))
        .collect::<Option<Vec<_>>>()?;
    Some(Unknown {
        name,
        expected,
        table,
    })
}

impl Unknown<'_> {
    fn describe(&self, env_names: &[String]) -> String {
        let full = |name: &str| match self.table {
            Some(table) => format!("{table}.{name}"),
            None => name.to_owned(),
        };
        let key = full(self.name);
        let variable = format!("{ENV_PREFIX}__{}", key.replace('.', "__"));
        let from_env = match env_names.iter().find(|v| v.eq_ignore_ascii_case(&variable)) {
            Some(v) => format!(" (set by the environment variable {v})"),
            None => String::new(),
        };
        let guess = match closest(self.name, &self.expected) {
            Some(near) => format!("did you mean `{}`? ", full(near)),
            None => String::new(),
        };
        let place = match self.table {
            Some(table) => format!("[{table}] takes"),
            None => "the sections are".to_owned(),
        };
        format!(
            "unknown key `{key}`{from_env}; {guess}{place}: {}",
            self.expected.join(", ")
        )
    }
}

/// The allowed name nearest to `name`, if one is near enough to be a slip: at most two edits
/// (a third of the name's length for long names), or the same name with `_` and case aside.
fn closest<'a>(name: &str, expected: &[&'a str]) -> Option<&'a str> {
    let plain = |s: &str| s.replace(['_', '-'], "").to_lowercase();
    let allowed = (name.chars().count() / 3).max(2);
    expected
        .iter()
        .map(|e| {
            let d = if plain(e) == plain(name) {
                0
            } else {
                distance(name, e)
            };
            (d, *e)
        })
        .filter(|(d, _)| *d <= allowed)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

/// Levenshtein distance (insertions, deletions, substitutions), by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_in_a_table_names_the_full_key_and_the_intended_one() {
        let said = explain(
            "unknown field `sender`, expected one of `senders`, `failover`, `username` for key \
             `accounts.billing`",
            &[],
        );
        assert_eq!(
            said,
            "unknown key `accounts.billing.sender`; did you mean `accounts.billing.senders`? \
             [accounts.billing] takes: senders, failover, username"
        );
    }

    #[test]
    fn a_misspelt_section_is_named_among_the_sections() {
        let said = explain(
            "unknown field `delivry`, expected one of `listen`, `queue`, `delivery`",
            &[],
        );
        assert_eq!(
            said,
            "unknown key `delivry`; did you mean `delivery`? the sections are: listen, queue, \
             delivery"
        );
    }

    #[test]
    fn a_key_from_the_environment_names_its_variable() {
        let said = explain(
            "unknown field `pasword`, expected one of `password`, `password_file` for key \
             `upstream`",
            &[
                "PATH".to_owned(),
                "GMAIL_RELAY__UPSTREAM__PASWORD".to_owned(),
            ],
        );
        assert!(
            said.starts_with(
                "unknown key `upstream.pasword` (set by the environment variable \
                 GMAIL_RELAY__UPSTREAM__PASWORD); did you mean `upstream.password`?"
            ),
            "{said}"
        );
    }

    #[test]
    fn nothing_near_is_no_guess_and_other_messages_pass_through() {
        let said = explain(
            "unknown field `colour`, expected one of `password`, `username` for key `upstream`",
            &[],
        );
        assert_eq!(
            said,
            "unknown key `upstream.colour`; [upstream] takes: password, username"
        );
        let other = "invalid type: string \"abc\", expected an integer for key `upstream.port`";
        assert_eq!(explain(other, &[]), other);
        assert_eq!(
            explain("unknown field `x`, garbled", &[]),
            "unknown field `x`, garbled"
        );
    }

    #[test]
    fn nearness_forgives_underscores_and_small_slips_only() {
        assert_eq!(
            closest("clientsecret", &["client_id", "client_secret"]),
            Some("client_secret")
        );
        assert_eq!(closest("maxperday", &["max_per_day"]), Some("max_per_day"));
        assert_eq!(
            closest("allowed_network", &["allowed_networks"]),
            Some("allowed_networks")
        );
        assert_eq!(closest("tls", &["host", "port"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
