//! Tokens for gateways started with `--jwt-secret`.

/// Now, in Unix seconds: what a token's `exp` and `nbf` are measured in.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A JSON Web Token signed with HS256 and `secret`, for gateways started with
/// `--jwt-secret`.
pub fn hs256_token(secret: &str, claims: &serde_json::Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing cannot fail")
}
