//! The exchange with Google's token endpoint: posting a form (a refresh token's or a signed
//! assertion's), reading the reply, and saying what a refusal means and what to do about it,
//! for a refresh token or for a service account's mailbox.

use super::*;

/// The grant type of a service account's assertion (RFC 7523).
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The access token of a successful reply, checked.
pub(super) fn access_token(reply: TokenReplyOk, whom: &str) -> Result<AccessToken, TokenError> {
    let access = reply.access_token.ok_or_else(|| {
        TokenError::Unavailable("the token endpoint answered without an access_token".into())
    })?;
    if access.len() > 8192 {
        return Err(TokenError::Unavailable(format!(
            "the access token is {} bytes, more than any Google issues",
            access.len()
        )));
    }
    let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(3600));
    tracing::debug!(
        expires_in = lifetime.as_secs(),
        whom,
        "OAuth2 access token refreshed"
    );
    Ok(AccessToken {
        value: Secret::new(access),
        expires_at: Instant::now() + lifetime,
        scope: reply.scope,
    })
}

/// The client secret, read from its file if it is kept in one.
pub(crate) fn client_secret(settings: &OAuth2Config) -> Result<Option<Secret>, TokenError> {
    settings
        .client_secret
        .as_ref()
        .map(|s| {
            s.load().map_err(|e| {
                TokenError::Rejected(format!(
                    "cannot read {}.client_secret_file: {e}",
                    settings.section
                ))
            })
        })
        .transpose()
}

/// A token endpoint's refusal: temporary, or Google's `error` and `error_description`.
pub(crate) enum Refused {
    /// The endpoint failed for now (network, 5xx, 429).
    Unavailable(String),
    /// Google refused the request.
    OAuth {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// `error`, e.g. `invalid_grant`.
        error: String,
        /// `error_description`.
        description: String,
    },
}

/// POSTs a form to a token endpoint.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: &[(&str, String)],
) -> Result<TokenReplyOk, Refused> {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let response = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| Refused::Unavailable(format!("{url}: {}", error_chain(&e))))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| Refused::Unavailable(format!("{url}: {}", error_chain(&e))))?;
    let reply: Option<TokenReply> = serde_json::from_slice(&bytes).ok();
    if status.is_success() {
        let reply = reply.ok_or_else(|| {
            Refused::Unavailable(format!(
                "{url} answered {status} with a body that is not JSON"
            ))
        })?;
        return Ok(TokenReplyOk {
            access_token: reply.access_token,
            expires_in: reply.expires_in,
            refresh_token: reply.refresh_token,
            scope: reply.scope,
        });
    }
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(Refused::Unavailable(format!("{url} answered {status}")));
    }
    let (error, description) = reply
        .map(|r| {
            (
                r.error.unwrap_or_default(),
                r.error_description.unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    Err(Refused::OAuth {
        url: url.to_owned(),
        status: status.as_u16(),
        error,
        description,
    })
}

/// What a refusal of the refresh-token (or authorization-code) grant means for the operator.
pub(crate) fn refresh_refusal(refused: Refused, section: &str) -> TokenError {
    let (url, status, error, description) = match refused {
        Refused::Unavailable(why) => return TokenError::Unavailable(why),
        Refused::OAuth {
            url,
            status,
            error,
            description,
        } => (url, status, error, description),
    };
    TokenError::Rejected(match error.as_str() {
        "invalid_grant" => format!(
            "refresh token rejected by Google (invalid_grant{}): re-authorize with \
             `gmail-relay oauth authorize`; apps in Testing status lose refresh tokens after 7 \
             days, and a password change revokes tokens with Gmail scopes",
            if description.is_empty() {
                String::new()
            } else {
                format!(": {description}")
            }
        ),
        "invalid_client" | "unauthorized_client" => format!(
            "Google rejects the OAuth client ({error}: {description}): check \
             {section}.client_id and client_secret"
        ),
        _ => format!("{url} answered {status} {error} {description}"),
    })
}

/// What a refusal of a service account's assertion means for the operator.
pub(super) fn jwt_refusal(
    refused: Refused,
    key: &ServiceKey,
    subject: &str,
    section: &str,
) -> TokenError {
    let (status, error, description) = match refused {
        Refused::Unavailable(why) => return TokenError::Unavailable(why),
        Refused::OAuth {
            status,
            error,
            description,
            ..
        } => (status, error, description),
    };
    let kid = &key.private_key_id;
    match error.as_str() {
        "unauthorized_client" => TokenError::Rejected(format!(
            "Google refuses the service account {} for {subject} (unauthorized_client: \
             {description}): domain-wide delegation is not granted for this scope; in the Admin \
             console go to Security → Access and data control → API controls → Domain-wide \
             delegation and add client ID {} with the scope {GMAIL_SCOPE}",
            key.client_email, key.client_id
        )),
        "invalid_grant" if description.contains("Invalid email or User ID") => {
            TokenError::NoSuchMailbox(format!(
                "{subject} is not a mailbox of the domain the service account {} may act for \
                 (invalid_grant: {description})",
                key.client_email
            ))
        }
        // Google's clock-skew answer: "Invalid JWT: Token must be a short-lived token (60
        // minutes) and in a reasonable timeframe. Check your iat and exp values ...".
        "invalid_grant" if description.contains("JWT") && !description.contains("Signature") => {
            TokenError::Rejected(format!(
                "Google refuses the assertion signed with key {kid} (invalid_grant: \
                 {description}); the assertion says it was made now and expires in an hour, so \
                 this machine's clock is probably wrong: check it (timedatectl; NTP)"
            ))
        }
        "invalid_grant" | "invalid_client" => TokenError::Rejected(format!(
            "Google refuses the service account key {kid} of {} ({error}: {description}): the \
             key may have been deleted or disabled; create a new key and point \
             {section}.key_file at it",
            key.client_email
        )),
        _ => TokenError::Rejected(format!(
            "the token endpoint answered {status} {error} {description} for {subject}, asked by \
             service account {} with key {kid} ({section}.key_file): check the key and its \
             domain-wide delegation in the Admin console",
            key.client_email
        )),
    }
}

/// A successful token reply.
pub(crate) struct TokenReplyOk {
    pub access_token: Option<String>,
    pub expires_in: Option<u64>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

/// An error and its causes on one line (an HTTP client's errors nest), without repeating a
/// cause its wrapper already says.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
