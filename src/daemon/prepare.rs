//! The one step that turns a validated configuration (plain data) into what the relay runs
//! with: the listener's users, certificate and sender routes, each account's TLS context and
//! credentials.
//! `gmail-relay check`, start-up and reload all go through [`prepare`], so a config that
//! passes `check` starts, and a reload is refused for exactly what `check` would report.
//!
//! It reads files (password, CA, certificate, key, users) but opens no socket: nothing here
//! talks to the network.

use crate::config::Config;
use crate::delivery::{self, SetupError};
use crate::intake::{self, ListenSetupError};

/// A configuration with its runtime parts built.
#[derive(Clone)]
pub struct Prepared {
    /// The configuration.
    pub config: Config,
    /// The listener's users and TLS acceptor.
    pub listen: intake::Setup,
    /// Each account's TLS context and credentials, the default first.
    pub upstreams: Vec<delivery::Setup>,
}

/// Why a configuration could not be prepared. Each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The listener's users or certificate.
    #[error(transparent)]
    Listen(#[from] ListenSetupError),
    /// The upstream's TLS settings or credentials.
    #[error(transparent)]
    Upstream(#[from] SetupError),
}

/// Builds the runtime parts of `config`.
pub fn prepare(config: Config) -> Result<Prepared, PrepareError> {
    let router = crate::policy::Router::new(&config.accounts);
    let listen = intake::Setup::new(config.listen.clone(), router)?;
    let upstreams = config
        .accounts
        .iter()
        .map(|a| delivery::Setup::new(a.upstream.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        config,
        listen,
        upstreams,
    })
}
