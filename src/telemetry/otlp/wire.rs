//! Protobuf's wire format, as much of it as OTLP spans need: a field is a key
//! varint `(field_number << 3) | wire_type`, then the value. Wire type 0 is a
//! varint (bools, enums, `uint32`, `int64` as its two's-complement `u64`), 1
//! is 8 little-endian bytes (`fixed64`, `double`), 5 is 4 (`fixed32`) and 2 is
//! a length varint then the bytes (strings, bytes, nested messages). Like
//! prost, the writers that say so omit proto3 defaults, and every varint is
//! minimal.

/// Wire types.
pub(super) const VARINT: u32 = 0;
pub(super) const I64: u32 = 1;
pub(super) const LEN: u32 = 2;
pub(super) const I32: u32 = 5;

#[inline]
pub(super) fn tag(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

#[inline]
pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
pub(super) fn varint_len(v: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A varint field, omitted when 0 (proto3 `uint32`, enums).
#[inline]
pub(super) fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        varint_field(out, field, v);
    }
}

#[inline]
pub(super) fn varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, VARINT);
    varint(out, v);
}

#[inline]
pub(super) fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        tag(out, field, I64);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
pub(super) fn fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    if v != 0 {
        tag(out, field, I32);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
pub(super) fn double(out: &mut Vec<u8>, field: u32, v: f64) {
    tag(out, field, I64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A string field, omitted when empty.
#[inline]
pub(super) fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

#[inline]
pub(super) fn string_always(out: &mut Vec<u8>, field: u32, s: &str) {
    tag(out, field, LEN);
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A bytes field, omitted when empty.
#[inline]
pub(super) fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    if !b.is_empty() {
        tag(out, field, LEN);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
}

/// Where [`begin`] left room for a length varint, and how much.
pub(super) struct Mark {
    at: usize,
    reserved: usize,
}

/// Starts a length-delimited `field`, reserving `guess` bytes for its length.
#[inline]
pub(super) fn begin(out: &mut Vec<u8>, field: u32, guess: usize) -> Mark {
    tag(out, field, LEN);
    let at = out.len();
    out.resize(at + guess, 0);
    Mark {
        at,
        reserved: guess,
    }
}

/// Ends the field [`begin`] started: writes the body's length as a minimal
/// varint, moving the body only if the reserved bytes were too few or many.
#[inline]
pub(super) fn end(out: &mut Vec<u8>, Mark { at, reserved }: Mark) {
    let body = at + reserved..out.len();
    let len = body.len();
    let need = varint_len(len as u64);
    if need != reserved {
        if need > reserved {
            out.resize(at + need + len, 0);
        }
        out.copy_within(body, at + need);
        out.truncate(at + need + len);
    }
    let mut v = len as u64;
    for b in &mut out[at..at + need] {
        *b = v as u8 | 0x80;
        v >>= 7;
    }
    out[at + need - 1] &= 0x7f;
}
