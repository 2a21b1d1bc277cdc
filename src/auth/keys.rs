//! Token keys: the hub's own HS256 secret plus, optionally, an identity provider's public keys
//! (RS256 / ES256 from PEM files or a JWKS file, RFC 7517), with `iss` / `aud` checks.
//!
//! Algorithm confusion (an HS256 token "signed" with a public key, `alg: none`) is refused by
//! construction: the key is chosen by the token's `alg` (and `kid`) among keys of that family
//! only, and each key verifies only the one algorithm it was configured for.

use std::path::PathBuf;

use anyhow::Context;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::Serialize;

use super::{Claims, Role};

/// Clock skew tolerated on `exp` and `nbf`, seconds (the common default of IdP SDKs).
pub const LEEWAY_S: u64 = 30;

/// Where verification keys come from and which claims are required; see `trackhub serve --help`.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// PEM public keys (`-----BEGIN PUBLIC KEY-----`, RSA → RS256, EC P-256 → ES256).
    pub public_key_files: Vec<PathBuf>,
    /// A JWKS document (`{"keys":[…]}`), as served at an IdP's `/.well-known/jwks.json`.
    pub jwks_file: Option<PathBuf>,
    /// Required `iss` when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of) when set.
    pub audience: Option<String>,
}

/// One verification key and the single algorithm it accepts.
struct VerifyKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// Signing (HS256, the hub's own tokens) and verification keys.
pub struct Keys {
    encoding: EncodingKey,
    /// The HS256 secret first, then the configured public keys.
    verify: Vec<VerifyKey>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys(HS256 + {} public keys, redacted)",
            self.verify.len() - 1
        )
    }
}

/// Claims as minted, with the configured `iss` / `aud`.
#[derive(Serialize)]
struct Minted<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

impl Keys {
    /// HS256 only, no `iss` / `aud` requirement (tools and tests that mint tokens).
    pub fn from_secret(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            verify: vec![VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }],
            issuer: None,
            audience: None,
        }
    }

    /// The HS256 secret plus the public keys and claim requirements of `cfg`.
    ///
    /// Errors: unreadable files, PEM that is neither an RSA nor an EC P-256 public key, a JWKS
    /// without one usable signing key.
    pub fn from_config(secret: &[u8], cfg: &AuthConfig) -> anyhow::Result<Self> {
        let mut keys = Self::from_secret(secret);
        keys.issuer = cfg.issuer.clone().filter(|s| !s.is_empty());
        keys.audience = cfg.audience.clone().filter(|s| !s.is_empty());
        for path in &cfg.public_key_files {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            keys.verify
                .push(pem_key(&pem).with_context(|| format!("{}", path.display()))?);
        }
        if let Some(path) = &cfg.jwks_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let set: JwkSet = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a JWKS document", path.display()))?;
            let before = keys.verify.len();
            for jwk in &set.keys {
                match jwk_key(jwk) {
                    Ok(k) => keys.verify.push(k),
                    Err(e) => {
                        tracing::warn!(kid = ?jwk.common.key_id, error = %e, "JWKS key skipped")
                    }
                }
            }
            anyhow::ensure!(
                keys.verify.len() > before,
                "{} holds no usable RS256/ES256 signing key",
                path.display()
            );
        }
        if keys.accepts_any_audience() {
            tracing::warn!(
                "identity-provider keys are configured without --jwt-audience: tokens the \
                 provider issued for ANY application are accepted. Set --jwt-audience to this \
                 hub's audience"
            );
        }
        Ok(keys)
    }

    /// True when identity-provider keys are configured without an audience: a provider signs
    /// tokens for many applications, and without the `aud` check a token it issued for any of
    /// them is accepted here (RFC 7519 §4.1.3). The hub starts anyway, with a warning.
    pub fn accepts_any_audience(&self) -> bool {
        self.verify.len() > 1 && self.audience.is_none()
    }

    /// Signs an HS256 token for `sub` with `role` in `fleet`, valid for `ttl_s` seconds, with
    /// the configured `iss` / `aud`.
    pub fn mint(&self, sub: &str, role: Role, fleet: &str, ttl_s: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.into(),
            role,
            fleet: fleet.into(),
            exp: now + ttl_s,
            iat: Some(now),
            nbf: None,
        };
        let minted = Minted {
            claims: &claims,
            iss: self.issuer.as_deref(),
            aud: self.audience.as_deref(),
        };
        encode(&Header::new(Algorithm::HS256), &minted, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Verifies a token and returns its claims.
    ///
    /// Checks: the header's `alg` is HS256, RS256 or ES256 and a key of that algorithm (with the
    /// header's `kid`, when it names one we hold) verifies the signature; `exp` is required, `exp`
    /// and `nbf` hold within [`LEEWAY_S`]; `iss` and `aud` match when configured; `sub` and
    /// `fleet` are not empty. Errors are short human-readable reasons for the 401 body.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let header = decode_header(token).map_err(|e| format!("malformed token: {e}"))?;
        let mut candidates = self
            .verify
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .peekable();
        if candidates.peek().is_none() {
            return Err(format!("no key for algorithm {:?}", header.alg));
        }
        let mut last_error = String::new();
        for k in candidates {
            match decode::<Claims>(token, &k.key, &self.validation(k.alg)) {
                Ok(data) => {
                    let claims = data.claims;
                    check_id("sub", &claims.sub)?;
                    check_id("fleet", &claims.fleet)?;
                    return Ok(claims);
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(last_error)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_S;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }
}

/// A PEM public key: RSA → RS256, EC (P-256) → ES256.
fn pem_key(pem: &[u8]) -> anyhow::Result<VerifyKey> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Ok(VerifyKey {
            kid: None,
            alg: Algorithm::RS256,
            key,
        });
    }
    let key = DecodingKey::from_ec_pem(pem)
        .map_err(|e| anyhow::anyhow!("neither an RSA nor an EC public key in PEM form: {e}"))?;
    Ok(VerifyKey {
        kid: None,
        alg: Algorithm::ES256,
        key,
    })
}

/// A JWK usable for signatures: RSA (RS256) or EC P-256 (ES256); `alg`, when present, must agree.
fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> anyhow::Result<VerifyKey> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => anyhow::bail!("only RSA and EC P-256 keys are supported"),
    };
    let declared = jwk.common.key_algorithm;
    let agrees = match declared {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    anyhow::ensure!(
        agrees,
        "declared alg {declared:?} is not RS256/ES256 for this key type"
    );
    if let Some(use_) = &jwk.common.public_key_use {
        anyhow::ensure!(
            *use_ == jsonwebtoken::jwk::PublicKeyUse::Signature,
            "key is not for signatures"
        );
    }
    Ok(VerifyKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key: DecodingKey::from_jwk(jwk)?,
    })
}

/// Longest `sub` or `fleet` accepted, characters.
pub const MAX_ID_LEN: usize = 128;

/// A `sub` or `fleet` the hub can key state and rows by: 1 to [`MAX_ID_LEN`] characters, none
/// of them a control character (issue 16: a NUL in `sub` passed verification, then PostgreSQL
/// refused it in text and the whole history batch it shared failed).
fn check_id(claim: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.chars().count() > MAX_ID_LEN {
        return Err(format!(
            "token `{claim}` must have 1 to {MAX_ID_LEN} characters"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("token `{claim}` contains a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    #[test]
    fn identity_provider_keys_without_an_audience_are_flagged() {
        let fixture = |name: &str| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/keys")
                .join(name)
        };
        let secret = b"0123456789abcdef0123456789abcdef";
        let jwks = AuthConfig {
            jwks_file: Some(fixture("jwks.json")),
            ..AuthConfig::default()
        };
        assert!(Keys::from_config(secret, &jwks)
            .unwrap()
            .accepts_any_audience());
        let scoped = AuthConfig {
            audience: Some("trackhub".into()),
            ..jwks
        };
        assert!(!Keys::from_config(secret, &scoped)
            .unwrap()
            .accepts_any_audience());
        assert!(
            !Keys::from_secret(secret).accepts_any_audience(),
            "HS256 only: our own tokens"
        );
    }

    #[test]
    fn sub_and_fleet_must_be_printable_and_bounded() {
        let keys = Keys::from_secret(b"0123456789abcdef0123456789abcdef");
        assert!(keys
            .verify(&keys.mint("D1", Role::Driver, "f1", 60))
            .is_ok());
        for (sub, fleet) in [
            ("D\u{0}1", "f1"),
            ("D1", "f\n1"),
            ("", "f1"),
            ("D1", ""),
            (&"x".repeat(MAX_ID_LEN + 1)[..], "f1"),
        ] {
            let token = keys.mint(sub, Role::Driver, fleet, 60);
            assert!(keys.verify(&token).is_err(), "{sub:?} / {fleet:?}");
        }
    }
}
