//! Google Workspace service accounts with domain-wide delegation: the JSON key, and the signed
//! JWT (RFC 7523) that is exchanged for an access token to act as one mailbox.
//!
//! The key file is read and its `private_key` (PKCS#8 PEM, RSA) parsed when the daemon
//! prepares the credentials, so a malformed key is a configuration error naming the key and the
//! field. The assertion is signed RS256 with ring's RSA signer: header
//! `{"alg":"RS256","typ":"JWT","kid":<private_key_id>}`, claims `iss` = the key's
//! `client_email`, `scope` = `https://mail.google.com/`, `aud` = the token URL, `iat` = now,
//! `exp` = now + 1 hour, `sub` = the mailbox. Nothing secret prints: the key pair is not
//! `Debug`, and the assertion is a [`Secret`].

use std::fmt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use ring::rand::SystemRandom;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use super::Secret;
use super::oauth2::GMAIL_SCOPE;

/// How long an assertion (and the token for it) is asked for: Google's maximum.
pub const ASSERTION_LIFETIME: u64 = 3600;

/// A service account's key, from its JSON key file.
pub struct ServiceKey {
    /// The service account's address (`iss`); never the login.
    pub client_email: String,
    /// Its OAuth client id: what an admin grants domain-wide delegation to.
    pub client_id: String,
    /// The key's id (`kid`), to tell which key Google refused.
    pub private_key_id: String,
    /// The key file's token endpoint.
    pub token_uri: String,
    key_pair: RsaKeyPair,
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .finish_non_exhaustive()
    }
}

/// Why a key file cannot be used: the field at fault (or the file) and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {field}: {why}")]
pub struct KeyFileError {
    /// The file.
    pub path: String,
    /// The JSON field at fault, or "file".
    pub field: &'static str,
    /// What is wrong.
    pub why: String,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    client_id: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
}

impl ServiceKey {
    /// Reads and checks a JSON key file as Google Cloud issues it. Warns (once) when the file
    /// can be read by other users than its owner.
    pub fn load(path: &Path) -> Result<ServiceKey, KeyFileError> {
        let err = |field, why: String| KeyFileError {
            path: path.display().to_string(),
            field,
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| err("file", e.to_string()))?;
        warn_if_readable_by_others(path);
        let file: KeyFile = serde_json::from_slice(&bytes).map_err(|e| {
            err(
                "file",
                format!("not a JSON key file ({e}); download one from Google Cloud (IAM → Service accounts → Keys → Add key → JSON)"),
            )
        })?;
        if file.kind.as_deref() != Some("service_account") {
            return Err(err(
                "type",
                format!(
                    "is {:?}, not \"service_account\" (an OAuth client file is not a service account key)",
                    file.kind.unwrap_or_default()
                ),
            ));
        }
        let need = |field: &'static str, value: Option<String>| {
            value
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| err(field, "is missing".into()))
        };
        let pem = need("private_key", file.private_key)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
            err(
                "private_key",
                format!("is not a PKCS#8 PEM private key ({e})"),
            )
        })?;
        let key_pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|e| err("private_key", format!("is not a usable RSA key ({e})")))?;
        Ok(ServiceKey {
            client_email: need("client_email", file.client_email)?,
            client_id: need("client_id", file.client_id)?,
            private_key_id: need("private_key_id", file.private_key_id)?,
            token_uri: file
                .token_uri
                .unwrap_or_else(|| super::GOOGLE_TOKEN_URL.to_owned()),
            key_pair,
        })
    }

    /// The signed assertion to act as `subject`, for the token endpoint `audience`, made at
    /// `now` (Unix seconds).
    pub fn assertion(&self, subject: &str, audience: &str, now: u64) -> Secret {
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "kid": self.private_key_id,
        });
        let claims = serde_json::json!({
            "iss": self.client_email,
            "scope": GMAIL_SCOPE,
            "aud": audience,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "sub": subject,
        });
        let signed = format!(
            "{}.{}",
            B64URL.encode(header.to_string()),
            B64URL.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .expect("an RSA key that loaded can sign");
        Secret::new(format!("{signed}.{}", B64URL.encode(signature)))
    }
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the service account key file can be read by other users; it lets anyone act as \
             any mailbox of the domain: chmod 600 it (or pass it as a systemd credential)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON key file in `dir` with `fields` changed (`null` removes one), and an RSA key
    /// made by the openssl command (ring cannot generate RSA keys).
    fn key_file(dir: &Path, fields: serde_json::Value) -> std::path::PathBuf {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let pem = PEM.get_or_init(|| {
            let out = std::process::Command::new("openssl")
                .args([
                    "genpkey",
                    "-algorithm",
                    "RSA",
                    "-pkeyopt",
                    "rsa_keygen_bits:2048",
                ])
                .output()
                .expect("the tests make an RSA key with the openssl command: apt install openssl");
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap()
        });
        let mut json = serde_json::json!({
            "type": "service_account",
            "private_key_id": "kid-1",
            "private_key": pem,
            "client_email": "relay@p.iam.gserviceaccount.com",
            "client_id": "1234",
            "token_uri": "https://oauth2.googleapis.com/token",
        });
        for (k, v) in fields.as_object().unwrap() {
            if v.is_null() {
                json.as_object_mut().unwrap().remove(k);
            } else {
                json[k] = v.clone();
            }
        }
        let path = dir.join("key.json");
        std::fs::write(&path, json.to_string()).unwrap();
        path
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&B64URL.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn the_assertion_is_signed_rs256_with_the_claims_google_wants() {
        let dir = tempfile::tempdir().unwrap();
        let key = ServiceKey::load(&key_file(dir.path(), serde_json::json!({}))).unwrap();
        let jwt = key.assertion("scanner@example.com", "https://t.test/token", 1_800_000_000);
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            decode(parts[1]),
            serde_json::json!({
                "iss": "relay@p.iam.gserviceaccount.com",
                "scope": "https://mail.google.com/",
                "aud": "https://t.test/token",
                "iat": 1_800_000_000u64,
                "exp": 1_800_003_600u64,
                "sub": "scanner@example.com",
            })
        );
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.key_pair.public().as_ref().to_vec(),
        );
        let signature = B64URL.decode(parts[2]).unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the public key");
        assert!(public.verify(b"other", &signature).is_err());
        // Nothing secret prints.
        assert_eq!(
            format!("{key:?}"),
            r#"ServiceKey { client_email: "relay@p.iam.gserviceaccount.com", private_key_id: "kid-1", .. }"#
        );
        assert!(!format!("{jwt:?}").contains(parts[2]));
        assert_eq!(key.token_uri, "https://oauth2.googleapis.com/token");
    }

    #[test]
    fn a_bad_key_file_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                serde_json::json!({"type": "authorized_user"}),
                "type",
                "not \"service_account\"",
            ),
            (
                serde_json::json!({"private_key": null}),
                "private_key",
                "is missing",
            ),
            (
                serde_json::json!({"private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}),
                "private_key",
                "is not a usable RSA key",
            ),
            (
                serde_json::json!({"private_key": "not a key"}),
                "private_key",
                "PKCS#8 PEM",
            ),
            (
                serde_json::json!({"client_email": ""}),
                "client_email",
                "is missing",
            ),
            (
                serde_json::json!({"client_id": null}),
                "client_id",
                "is missing",
            ),
            (
                serde_json::json!({"private_key_id": null}),
                "private_key_id",
                "is missing",
            ),
        ];
        for (fields, field, why) in cases {
            let path = key_file(dir.path(), fields.clone());
            let err = ServiceKey::load(&path).unwrap_err();
            assert_eq!(err.field, field, "{fields}: {err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&path.display().to_string()) && text.contains(why),
                "{fields}: {text}"
            );
        }
        let err = ServiceKey::load(&dir.path().join("nope.json")).unwrap_err();
        assert_eq!(err.field, "file");
        std::fs::write(dir.path().join("client.json"), "{\"installed\": ").unwrap();
        let err = ServiceKey::load(&dir.path().join("client.json")).unwrap_err();
        assert!(err.to_string().contains("not a JSON key file"), "{err}");
        // No token_uri: Google's.
        let key = ServiceKey::load(&key_file(
            dir.path(),
            serde_json::json!({"token_uri": null}),
        ))
        .unwrap();
        assert_eq!(key.token_uri, crate::auth::GOOGLE_TOKEN_URL);
    }
}
