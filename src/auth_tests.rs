//! Token verification, table-driven. The key pairs in tests/keys are test-only.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"a test secret that is long enough";
const RSA_PRIVATE: &[u8] = include_bytes!("../tests/keys/rsa-private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../tests/keys/ec-private.pem");

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hs256(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

fn rs256(claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap()
}

fn es256(claims: Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE).unwrap();
    encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap()
}

fn key_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn secret_only() -> Verifier {
    Verifier::new(Some(SECRET), None).unwrap().unwrap()
}

fn valid() -> Value {
    json!({"sub": "alice", "exp": now() + 60})
}

#[track_caller]
fn check(verifier: &Verifier, token: &str, expected: Result<(), AuthError>) {
    assert_eq!(
        verifier.verify(token).map(|_| ()),
        expected,
        "token {token}"
    );
}

#[test]
fn tokens_off_without_keys() {
    assert!(Verifier::new(None, None).unwrap().is_none());
    assert!(matches!(
        Verifier::new(Some(b""), None),
        Err(KeyError::EmptySecret)
    ));
}

#[test]
fn hs256_tokens() {
    let v = secret_only();
    check(&v, &hs256(valid()), Ok(()));
    check(
        &v,
        &hs256(json!({"sub": "a", "exp": now() - 60})),
        Err(AuthError::Expired),
    );
    // Within the few seconds of leeway.
    check(&v, &hs256(json!({"sub": "a", "exp": now() - 2})), Ok(()));
    check(
        &v,
        &hs256(json!({"sub": "a", "exp": now() + 60, "nbf": now() + 60})),
        Err(AuthError::NotYetValid),
    );
    check(&v, &hs256(json!({"sub": "a"})), Err(AuthError::Claims));
    check(
        &v,
        &hs256(json!({"exp": now() + 60})),
        Err(AuthError::Claims),
    );
    check(
        &v,
        &hs256(json!({"sub": 5, "exp": now() + 60})),
        Err(AuthError::Claims),
    );
    check(
        &v,
        &hs256(json!({"sub": "a", "exp": now() + 60, "tenant": "not.valid"})),
        Err(AuthError::Claims),
    );
    let other = encode(
        &Header::new(Algorithm::HS256),
        &valid(),
        &EncodingKey::from_secret(b"another"),
    )
    .unwrap();
    check(&v, &other, Err(AuthError::BadSignature));
    check(&v, "not-a-token", Err(AuthError::Malformed));
    check(&v, "", Err(AuthError::Malformed));
    check(&v, "a.b.c", Err(AuthError::Malformed));
}

#[test]
fn alg_none_and_unlisted_algorithms_are_refused() {
    use base64::Engine as _;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&valid())
    );
    let v = secret_only();
    assert!(v.verify(&none).is_err(), "alg none must never pass");
    // An HS384 token is well signed but not on the allowlist.
    let hs384 = encode(
        &Header::new(Algorithm::HS384),
        &valid(),
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap();
    check(&v, &hs384, Err(AuthError::Algorithm));
    // An RS256 token when no public key is configured.
    check(&v, &rs256(valid()), Err(AuthError::Algorithm));
}

#[test]
fn rs256_and_es256_with_a_public_key() {
    let rsa = Verifier::new(None, Some(&key_path("rsa-public.pem")))
        .unwrap()
        .unwrap();
    check(&rsa, &rs256(valid()), Ok(()));
    check(&rsa, &es256(valid()), Err(AuthError::Algorithm));
    check(&rsa, &hs256(valid()), Err(AuthError::Algorithm));
    let ec = Verifier::new(None, Some(&key_path("ec-public.pem")))
        .unwrap()
        .unwrap();
    check(&ec, &es256(valid()), Ok(()));
    check(&ec, &rs256(valid()), Err(AuthError::Algorithm));
}

#[test]
fn a_public_key_used_as_an_hmac_secret_is_refused() {
    // Algorithm confusion: sign HS256 with the *public* key's bytes.
    let public = std::fs::read(key_path("rsa-public.pem")).unwrap();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &valid(),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let rsa_only = Verifier::new(None, Some(&key_path("rsa-public.pem")))
        .unwrap()
        .unwrap();
    check(&rsa_only, &forged, Err(AuthError::Algorithm));
    let both = Verifier::new(Some(SECRET), Some(&key_path("rsa-public.pem")))
        .unwrap()
        .unwrap();
    check(&both, &forged, Err(AuthError::BadSignature));
    check(&both, &rs256(valid()), Ok(()));
    check(&both, &hs256(valid()), Ok(()));
}

#[test]
fn bad_key_files_are_reported() {
    assert!(matches!(
        Verifier::new(None, Some(std::path::Path::new("/nonexistent.pem"))),
        Err(KeyError::Read { .. })
    ));
    assert!(matches!(
        Verifier::new(
            None,
            Some(&key_path("rsa-private.pem").with_extension("missing"))
        ),
        Err(KeyError::Read { .. })
    ));
    let not_pem = std::env::temp_dir().join(format!("wsgate-not-a-key-{}", std::process::id()));
    std::fs::write(&not_pem, "hello").unwrap();
    assert!(matches!(
        Verifier::new(None, Some(&not_pem)),
        Err(KeyError::Pem { .. })
    ));
    let _ = std::fs::remove_file(not_pem);
}

#[test]
fn claims_become_an_identity() {
    let v = secret_only();
    let id = v.verify(&hs256(valid())).unwrap();
    assert_eq!(id.user.as_deref(), Some("alice"));
    assert_eq!(id.tenant, Tenant::default_tenant());
    assert!(matches!(id.permissions, Permissions::All));

    let id = v
        .verify(&hs256(
            json!({"sub": "bob", "exp": now() + 60, "tenant": "acme",
            "rooms": {"subscribe": ["team:*", "lobby"], "publish": ["team:blue"]}}),
        ))
        .unwrap();
    assert_eq!(id.tenant.as_str(), "acme");
    let room = |r| RoomName::parse(r).unwrap();
    assert!(id.permissions.may_subscribe(&room("lobby")));
    assert!(id.permissions.may_subscribe(&room("team:red")));
    assert!(!id.permissions.may_subscribe(&room("lobby2")));
    assert!(id.permissions.may_publish(&room("team:blue")));
    assert!(!id.permissions.may_publish(&room("team:red")));

    let id = v
        .verify(&hs256(
            json!({"sub": "c", "exp": now() + 60, "rooms": {"subscribe": ["*"]}}),
        ))
        .unwrap();
    assert!(id.permissions.may_subscribe(&room("anything")));
    assert!(
        !id.permissions.may_publish(&room("anything")),
        "a missing list allows nothing"
    );
}

#[test]
fn glob_patterns() {
    for (pattern, text, expected) in [
        ("lobby", "lobby", true),
        ("lobby", "lobby2", false),
        ("*", "", true),
        ("*", "x", true),
        ("team:*", "team:", true),
        ("team:*", "team:a.b", true),
        ("team:*", "tea", false),
        ("*:admin", "x:admin", true),
        ("*:admin", "x:admins", false),
        ("a*b*c", "abc", true),
        ("a*b*c", "aXbYc", true),
        ("a*b*c", "aXcYb", false),
        ("ab*ba", "aba", false),
        ("**", "x", true),
    ] {
        assert_eq!(matches(pattern, text), expected, "{pattern} vs {text}");
    }
}

#[test]
fn audience_and_issuer_are_required_and_checked_when_configured() {
    let strict = Verifier::with_claims(Some(SECRET), None, Some("chat"), Some("https://idp"))
        .unwrap()
        .unwrap();
    let with = |extra: Value| {
        let mut claims = valid();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        hs256(claims)
    };
    check(
        &strict,
        &with(json!({"aud": "chat", "iss": "https://idp"})),
        Ok(()),
    );
    check(
        &strict,
        &with(json!({"aud": ["billing", "chat"], "iss": "https://idp"})),
        Ok(()),
    );
    check(
        &strict,
        &with(json!({"aud": "billing", "iss": "https://idp"})),
        Err(AuthError::Audience),
    );
    check(
        &strict,
        &with(json!({"aud": "chat", "iss": "https://other"})),
        Err(AuthError::Issuer),
    );
    check(
        &strict,
        &with(json!({"iss": "https://idp"})),
        Err(AuthError::Claims),
    );
    check(
        &strict,
        &with(json!({"aud": "chat"})),
        Err(AuthError::Claims),
    );
    // Without the flags, aud and iss are not looked at.
    check(&secret_only(), &with(json!({"aud": "anything"})), Ok(()));
}

#[test]
fn the_identity_carries_the_tokens_expiry() {
    let exp = now() + 60;
    let id = secret_only()
        .verify(&hs256(json!({"sub": "alice", "exp": exp})))
        .unwrap();
    assert_eq!(id.expires, Some(exp as u64));
    assert_eq!(Identity::anonymous().expires, None);
}
