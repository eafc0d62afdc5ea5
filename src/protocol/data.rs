//! What a message's `data` must be, wherever it comes from (a client frame, the
//! HTTP API, another node): one JSON value, nested at most [`MAX_DEPTH`] levels,
//! with no half of a UTF-16 surrogate pair escaped on its own.

use serde_json::value::RawValue;

/// The deepest nesting of arrays and objects accepted in `data`. Common JSON
/// parsers refuse or overflow their stack far below the 30,000 levels a frame
/// of 64 KiB can hold (serde_json stops at 128, browsers' `JSON.parse` varies),
/// so relaying deeper data would hand subscribers frames they cannot parse.
pub const MAX_DEPTH: usize = 64;

/// Why `data` was refused. The messages are fixed text: they never echo input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    #[error("data contains an unpaired UTF-16 surrogate escape")]
    UnpairedSurrogate,
    #[error("data is nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Checks that `bytes` are one JSON value and returns them as raw data: the
/// payload of a message that arrived from another node.
pub fn parse_data(bytes: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    let text = std::str::from_utf8(bytes).map_err(serde::de::Error::custom)?;
    let raw = serde_json::from_str::<&RawValue>(text)?;
    check_data(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(raw.to_owned())
}

/// The checks serde_json's raw-value validation does not make, in one pass
/// over text that is already known to be a single JSON value:
/// - nesting depth, which `RawValue` skips without counting;
/// - `\u` escapes that encode half of a UTF-16 surrogate pair, which
///   `RawValue` lets through but strict parsers (serde_json's own `Value`, many
///   others) reject.
pub(super) fn check_data(raw: &str) -> Result<(), DataError> {
    let bytes = raw.as_bytes();
    // Almost all data has no escape and fewer than 64 brackets in all: then
    // there is no surrogate to check and no way to nest too deep. Both tests
    // are SIMD searches over the bytes, several times cheaper than the walk
    // below, which runs every message on the delivery path.
    let openers = memchr::memchr2_iter(b'[', b'{', bytes)
        .take(MAX_DEPTH + 1)
        .count();
    if openers <= MAX_DEPTH && memchr::memchr(b'\\', bytes).is_none() {
        return Ok(());
    }
    walk(raw)
}

/// The full check: nesting depth outside strings, and every escape.
fn walk(raw: &str) -> Result<(), DataError> {
    let bytes = raw.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let digits = raw.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DataError::TooDeep);
                }
                i += 1;
            }
            b']' | b'}' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'"' => {
                // Inside a string only a quote (its end) or a backslash (an
                // escape) matters: skip to the next one. Most of a message's
                // bytes are string contents, so this is where the time goes.
                i += 1;
                loop {
                    let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[i..]) else {
                        return Ok(());
                    };
                    i += at;
                    if bytes[i] == b'"' {
                        i += 1;
                        break;
                    }
                    i += escape_len(bytes, i, hex4)?;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// The length of the escape at `bytes[at]` (a backslash), refusing a `\u`
/// escape of half a surrogate pair that is not followed by its other half.
fn escape_len(
    bytes: &[u8],
    at: usize,
    hex4: impl Fn(usize) -> Option<u16>,
) -> Result<usize, DataError> {
    if bytes.get(at + 1) != Some(&b'u') {
        return Ok(2); // a one-character escape such as \n, \" or \/
    }
    match hex4(at + 2).ok_or(DataError::UnpairedSurrogate)? {
        0xD800..=0xDBFF => {
            let low = (bytes.get(at + 6) == Some(&b'\\') && bytes.get(at + 7) == Some(&b'u'))
                .then(|| hex4(at + 8))
                .flatten();
            match low {
                Some(0xDC00..=0xDFFF) => Ok(12),
                _ => Err(DataError::UnpairedSurrogate),
            }
        }
        0xDC00..=0xDFFF => Err(DataError::UnpairedSurrogate),
        _ => Ok(6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_is_counted_outside_strings_only() {
        assert_eq!(check_data(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(check_data(&nested(MAX_DEPTH + 1)), Err(DataError::TooDeep));
        assert_eq!(check_data(&nested(30_000)), Err(DataError::TooDeep));
        let objects = format!("{}1{}", r#"{"a":"#.repeat(65), "}".repeat(65));
        assert_eq!(check_data(&objects), Err(DataError::TooDeep));
        // Brackets inside strings, escaped quotes included, are text.
        let text = format!(r#"["{}\"{}"]"#, "[".repeat(200), "{".repeat(200));
        assert_eq!(check_data(&text), Ok(()));
        // Siblings do not add up: depth is nesting, not count.
        let wide = format!("[{}]", vec!["[[1]]"; 1000].join(","));
        assert_eq!(check_data(&wide), Ok(()));
    }
}
