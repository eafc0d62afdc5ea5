//! What a message's `data` must be, wherever it comes from (a client frame, the
//! HTTP API, another node): one JSON value, nested at most [`MAX_DEPTH`] levels,
//! with no half of a UTF-16 surrogate pair escaped on its own and no number
//! beyond the range of a 64-bit float.

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
    #[error("data contains a number beyond the range of a 64-bit float")]
    NumberOutOfRange,
}

/// The most integer digits a number in range can have: binary64 ends at about
/// 1.8e308, which has 309.
const MAX_INTEGER_DIGITS: usize = 309;

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
///   others) reject;
/// - numbers beyond the range of a 64-bit float (`1e400`, or 400 digits), which
///   the JSON grammar allows but serde_json's `Value` and Go's `encoding/json`
///   refuse, failing the whole frame.
pub(super) fn check_data(raw: &str) -> Result<(), DataError> {
    let bytes = raw.as_bytes();
    // Almost all data has no escape, fewer than 64 brackets in all and no
    // number that could be out of range: then there is no surrogate to check,
    // no way to nest too deep and no number to parse. These tests are SIMD
    // searches or sparse probes over the bytes, several times cheaper than the
    // walk below, which runs every message on the delivery path.
    let openers = memchr::memchr2_iter(b'[', b'{', bytes)
        .take(MAX_DEPTH + 1)
        .count();
    if openers <= MAX_DEPTH
        && memchr::memchr(b'\\', bytes).is_none()
        && !may_hold_huge_number(bytes)
    {
        return Ok(());
    }
    walk(raw)
}

/// Whether `bytes` may hold a number beyond the range of a 64-bit float,
/// without knowing which bytes are inside strings (a "yes" only sends the data
/// to the exact walk). Such a number has an exponent (a digit then `e` or `E`)
/// that is large for its number, or [`MAX_INTEGER_DIGITS`] digits in a row.
fn may_hold_huge_number(bytes: &[u8]) -> bool {
    // Text is full of `e`s, so searching for them one match at a time is slow;
    // a branch-free test over a block, which the compiler vectorises, finds
    // the rare block with a digit then an `e`, and only that block is looked at.
    const BLOCK: usize = 64;
    let digit_then_e = |d: u8, e: u8| (d.wrapping_sub(b'0') < 10) & (e | 0x20 == b'e');
    // A fixed-size block is what the compiler turns into vector code; the last,
    // shorter one is padded with spaces.
    let block_hit = |window: &[u8; BLOCK + 1]| {
        let mut hit = 0u8;
        for k in 0..BLOCK {
            hit |= u8::from(digit_then_e(window[k], window[k + 1]));
        }
        hit != 0
    };
    let pairs = bytes.len().saturating_sub(1);
    let large_exponent = (0..pairs).step_by(BLOCK).any(|start| {
        let hit = match bytes[start..].first_chunk::<{ BLOCK + 1 }>() {
            Some(window) => block_hit(window),
            None => {
                let mut window = [b' '; BLOCK + 1];
                window[..bytes.len() - start].copy_from_slice(&bytes[start..]);
                block_hit(&window)
            }
        };
        hit && (start..(start + BLOCK).min(pairs)).any(|at| {
            digit_then_e(bytes[at], bytes[at + 1]) && {
                let (from, to) = number_bounds(bytes, at);
                !in_range(&bytes[from..to])
            }
        })
    });
    // A run of MAX_INTEGER_DIGITS digits covers an index that is a multiple of
    // MAX_INTEGER_DIGITS - 1, so probing those indices finds every such run.
    let long_digit_run = (0..bytes.len())
        .step_by(MAX_INTEGER_DIGITS - 1)
        .any(|probe| {
            let digit = |i: &usize| bytes[*i].is_ascii_digit();
            let before = (0..probe).rev().take_while(digit).count();
            let after = (probe..bytes.len()).take_while(digit).count();
            before + after >= MAX_INTEGER_DIGITS
        });
    large_exponent || long_digit_run
}

/// The bytes of the number that contains `bytes[at]`: the run of characters a
/// JSON number is made of around it.
fn number_bounds(bytes: &[u8], at: usize) -> (usize, usize) {
    let in_number = |b: &&u8| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E');
    let start = at - bytes[..at].iter().rev().take_while(in_number).count();
    let end = at + bytes[at..].iter().take_while(in_number).count();
    (start, end)
}

/// Whether a JSON number is within the range of a 64-bit float. A number
/// below 10^308 is, and that is decided from its digit count and exponent;
/// only one that may be larger is parsed, by serde_json, so the rule is exactly
/// the one its `Value` applies. (Text that only looks like a number, inside a
/// string, may get either answer: it only decides whether the walk runs.)
fn in_range(number: &[u8]) -> bool {
    let (mantissa, exponent) = match number.iter().position(|b| b | 0x20 == b'e') {
        Some(e) => (&number[..e], &number[e + 1..]),
        None => (number, &b""[..]),
    };
    let integer_digits = mantissa
        .iter()
        .take_while(|b| **b != b'.')
        .filter(|b| b.is_ascii_digit())
        .count() as i64;
    let magnitude = exponent
        .iter()
        .filter(|b| b.is_ascii_digit())
        .fold(0i64, |n, d| (n * 10 + i64::from(d - b'0')).min(1 << 20));
    let exponent = if exponent.first() == Some(&b'-') {
        -magnitude
    } else {
        magnitude
    };
    integer_digits + exponent < MAX_INTEGER_DIGITS as i64
        || serde_json::from_slice::<f64>(number).is_ok()
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
            b'-' | b'0'..=b'9' => {
                // Outside a string this is a whole, valid number: RawValue
                // checked the grammar. Only an exponent or a long integer part
                // can take it out of range, so only those are parsed.
                let (_, end) = number_bounds(bytes, i);
                if !in_range(&bytes[i..end]) {
                    return Err(DataError::NumberOutOfRange);
                }
                i = end;
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

    #[test]
    fn numbers_beyond_a_double_are_refused_and_only_those() {
        let huge = format!("1{}", "0".repeat(MAX_INTEGER_DIGITS));
        for bad in [
            "1e400",
            "-1E+309",
            "[1, 444444444440e044441]",
            r#"{"n":{"m":[2.5e308]}}"#,
            &huge,
            &format!("[\"\\n\", -{huge}.5]"),
        ] {
            assert_eq!(check_data(bad), Err(DataError::NumberOutOfRange), "{bad}");
            // What is refused is exactly what serde_json's Value cannot hold.
            assert!(
                serde_json::from_str::<serde_json::Value>(bad).is_err(),
                "{bad}"
            );
        }
        let largest = format!("1{}", "0".repeat(MAX_INTEGER_DIGITS - 2));
        for good in [
            "1e308",
            "1.7976931348623157e308",
            "1e-400", // underflow is zero, which every parser takes
            "0.000000000000000000000000000000000001",
            r#""1e400 and a 400-digit number in a string are text""#,
            &format!(r#"["{huge}", "\n1e999"]"#),
            &largest,
            &format!("[{largest}, 1.{huge}]"),
            "[true, false, 2e5, \"me\"]",
        ] {
            assert_eq!(check_data(good), Ok(()), "{good}");
            assert!(
                serde_json::from_str::<serde_json::Value>(good).is_ok(),
                "{good}"
            );
        }
    }
}
