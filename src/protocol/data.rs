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
    let hex4 = |at: usize| -> Option<u16> {
        let digits = raw.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (false, b'"') | (true, b'"') => in_string = !in_string,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(DataError::TooDeep);
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            (true, b'\\') => {
                if bytes.get(i + 1) != Some(&b'u') {
                    i += 2; // a one-character escape such as \n, \" or \/
                    continue;
                }
                let unit = hex4(i + 2).ok_or(DataError::UnpairedSurrogate)?;
                match unit {
                    0xD800..=0xDBFF => {
                        let low = (bytes.get(i + 6) == Some(&b'\\')
                            && bytes.get(i + 7) == Some(&b'u'))
                        .then(|| hex4(i + 8))
                        .flatten();
                        match low {
                            Some(0xDC00..=0xDFFF) => i += 12,
                            _ => return Err(DataError::UnpairedSurrogate),
                        }
                    }
                    0xDC00..=0xDFFF => return Err(DataError::UnpairedSurrogate),
                    _ => i += 6,
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
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
