//! What a message's `data` must be, wherever it comes from: one JSON value, with
//! no half of a UTF-16 surrogate pair escaped on its own.

use serde_json::value::RawValue;

/// Checks that `bytes` are one JSON value and returns them as raw data: the
/// payload of a message that arrived from another node.
pub fn parse_data(bytes: &[u8]) -> Result<Box<RawValue>, serde_json::Error> {
    let text = std::str::from_utf8(bytes).map_err(serde::de::Error::custom)?;
    let raw = serde_json::from_str::<&RawValue>(text)?;
    check_surrogates(raw.get()).map_err(serde::de::Error::custom)?;
    Ok(raw.to_owned())
}

/// Refuses `\u` escapes that encode half of a UTF-16 surrogate pair.
///
/// serde_json's raw-value validation lets them through, but strict parsers
/// (serde_json's own `Value`, many others) reject a document containing one, so
/// relaying it would hand every subscriber a frame it cannot parse. `raw` is
/// already known to be JSON, so a backslash can only start a string escape.
pub(super) fn check_surrogates(raw: &str) -> Result<(), &'static str> {
    const MESSAGE: &str = "data contains an unpaired UTF-16 surrogate escape";
    let bytes = raw.as_bytes();
    let hex4 = |at: usize| -> Option<u16> {
        let digits = raw.get(at..at + 4)?;
        u16::from_str_radix(digits, 16).ok()
    };
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes.get(i + 1) != Some(&b'u') {
            i += 2; // a one-character escape such as \n or \/
            continue;
        }
        let unit = hex4(i + 2).ok_or(MESSAGE)?;
        match unit {
            0xD800..=0xDBFF => {
                let low = (bytes.get(i + 6) == Some(&b'\\') && bytes.get(i + 7) == Some(&b'u'))
                    .then(|| hex4(i + 8))
                    .flatten();
                match low {
                    Some(0xDC00..=0xDFFF) => i += 12,
                    _ => return Err(MESSAGE),
                }
            }
            0xDC00..=0xDFFF => return Err(MESSAGE),
            _ => i += 6,
        }
    }
    Ok(())
}
