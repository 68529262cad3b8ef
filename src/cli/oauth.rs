//! `gmail-relay oauth authorize|test`: getting and checking the XOAUTH2 refresh token (`test`
//! also checks a service account's token for its fixed mailbox).

use std::path::Path;

use anyhow::Context;
use gmail_relay::{config, delivery};

/// The XOAUTH2 token source of a config, or an error saying how to enable it.
fn token_source(
    setup: &delivery::Setup,
    path: &Path,
) -> anyhow::Result<gmail_relay::auth::TokenSource> {
    if setup.cfg.impersonate_sender {
        anyhow::bail!(
            "{}: account {} logs in as each sender; try one with `gmail-relay check --upstream \
             --as ADDRESS`",
            path.display(),
            setup.cfg.name
        );
    }
    setup
        .credentials()
        .token_source()
        .cloned()
        .with_context(|| {
            format!(
                "{}: {} is not \"xoauth2\"; set it and [{}] first",
                path.display(),
                setup.cfg.key("auth"),
                setup.cfg.key("oauth2")
            )
        })
}

/// Loads the config at `path` and prepares the upstream of `account`.
fn load(path: &Path, account: &str) -> anyhow::Result<(config::Config, delivery::Setup)> {
    let cfg = config::load(path)?;
    let Some(acct) = cfg.account(account) else {
        let names: Vec<&str> = cfg.accounts.iter().map(|a| a.name()).collect();
        anyhow::bail!(
            "{}: there is no account {account:?} (the accounts are {})",
            path.display(),
            names.join(", ")
        );
    };
    let setup = delivery::Setup::new(acct.upstream.clone())
        .with_context(|| format!("{}", path.display()))?;
    Ok((cfg, setup))
}

pub async fn authorize(path: &Path, account: &str) -> anyhow::Result<()> {
    use gmail_relay::auth::{SecretSource, authorize, write_secret_file};
    let (cfg, setup) = load(path, account)?;
    let username = setup.cfg.username.clone();
    let source = token_source(&setup, path)?;
    let Some(settings) = source.settings() else {
        anyhow::bail!(
            "{}: {} is a service account; it needs no authorization (`oauth test` checks it)",
            path.display(),
            setup.cfg.key("auth")
        );
    };
    let SecretSource::File(file) = &settings.refresh_token else {
        anyhow::bail!(
            "{}: set {}.refresh_token_file (instead of refresh_token) so the token can be stored",
            path.display(),
            settings.section
        );
    };
    let auth = authorize::begin(settings, &username).await?;
    println!("{}", auth.url);
    eprintln!(
        "\nOpen the URL above in a browser, sign in as {} and allow access.\n\
         Google then redirects to {} on this machine. If the browser runs elsewhere and that page\n\
         does not load, copy the address from the browser's address bar and paste it here.\n",
        &username, auth.redirect_uri
    );
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let code = auth.wait_for_code(rx).await?;
    let refresh = auth.exchange(settings, source.http(), &code).await?;
    write_secret_file(file, refresh.expose())
        .with_context(|| format!("cannot write {}", file.display()))?;
    // A relay paused on the old token should try the new one now, not in up to 30 minutes.
    if gmail_relay::control::request_running(&cfg.queue.dir, gmail_relay::control::Request::Probe)
        .await
        .is_ok()
    {
        eprintln!("The running relay was told to log in again with the new token.");
    }
    eprintln!(
        "Authorized. The refresh token is in {} (mode 0600). Check it with:\n  gmail-relay oauth test --config {}",
        file.display(),
        path.display()
    );
    Ok(())
}

pub async fn test(path: &Path, account: &str) -> anyhow::Result<()> {
    let (_, setup) = load(path, account)?;
    let source = token_source(&setup, path)?;
    let token = source.token().await.context("fetching an access token")?;
    let valid = token
        .expires_at
        .saturating_duration_since(tokio::time::Instant::now());
    println!(
        "access token: OK (valid for {})",
        humantime::format_duration(std::time::Duration::from_secs(valid.as_secs()))
    );
    let upstream = delivery::Upstream::new(setup, gmail_relay::observe::Metrics::new());
    let done = upstream
        .check_login()
        .await
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    println!("upstream: {done}");
    Ok(())
}
