//! What one upstream needs before it can connect, built from its configuration once (by
//! `daemon::prepare`, for `check`, start and reload alike): the TLS settings and the
//! credentials. Building it reads the password file and the CA file, so a mistake in either is
//! found before the relay starts or a reload is put in force.

use super::tls::{TlsSetupError, UpstreamTls};
use crate::auth::{Credentials, CredentialsError};
use crate::config::{AuthConfig, Transport, UpstreamConfig};

/// Why an upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A credential could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

/// An upstream's settings with their TLS context and credentials.
#[derive(Clone)]
pub struct Setup {
    /// The settings.
    pub cfg: UpstreamConfig,
    pub(super) tls: UpstreamTls,
    pub(super) credentials: Credentials,
    /// The Gmail API client, with `transport = "api"`.
    pub(super) api: Option<super::api::Api>,
}

impl Setup {
    /// Builds the TLS context and the credentials for `cfg`.
    pub fn new(cfg: UpstreamConfig) -> Result<Setup, SetupError> {
        let tls = UpstreamTls::new(&cfg)?;
        let credentials = Credentials::from_config(&cfg)?;
        let api = match cfg.transport {
            Transport::Api => Some(super::api::Api::new(&cfg)?),
            Transport::Smtp => None,
        };
        Ok(Setup {
            cfg,
            tls,
            credentials,
            api,
        })
    }

    /// The set-up of one sender's own mailbox, for an account that logs in as each sender
    /// (`impersonate_sender`); `name` names it (`billing/scanner@example.com`).
    pub fn for_mailbox(&self, mailbox: &str, name: &str) -> Option<Setup> {
        let credentials = self.credentials.for_mailbox(mailbox)?;
        let mut cfg = self.cfg.clone();
        cfg.name = name.to_owned();
        cfg.username = mailbox.to_owned();
        cfg.impersonate_sender = false;
        Some(Setup {
            cfg,
            tls: self.tls.clone(),
            credentials,
            api: self.api.clone(),
        })
    }

    /// The credentials (for `oauth` commands, which need the token source).
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// Would connecting with `other` differ from connecting with this: other settings, or
    /// another password in the same password file, or another service account key in the same
    /// key file (a rotated key)?
    pub fn differs_from(&self, other: &Setup) -> bool {
        let key_id = |s: &Setup| {
            s.credentials
                .service_key()
                .map(|k| (k.private_key_id.clone(), k.client_email.clone()))
        };
        self.cfg != other.cfg
            || self.credentials.password_secret() != other.credentials.password_secret()
            || key_id(self) != key_id(other)
    }

    /// This setup, keeping `old`'s credentials when the OAuth2 settings did not change: its
    /// cached access token stays valid, so a reload does not cost a token refresh.
    pub fn keeping_token_of(mut self, old: &Setup) -> Setup {
        if matches!(self.cfg.auth, AuthConfig::XOAuth2(_))
            && self.cfg.auth == old.cfg.auth
            && self.cfg.username == old.cfg.username
        {
            self.credentials = old.credentials.clone();
        }
        self
    }
}
