//! Encodes the SDK's `SpanData` as an OTLP `ExportTraceServiceRequest`.
//!
//! # Why by hand
//!
//! Exporting a span through opentelemetry-otlp cost ~9 µs of CPU, most of it in
//! opentelemetry-proto's conversion of `SpanData` into owned prost structs (a
//! `String` per attribute key and value, a `Vec` per id, a clone of the whole
//! batch per export attempt) and then prost's encoding of those structs. This
//! module writes the protobuf bytes straight from borrowed `SpanData` into one
//! caller-owned, reused `Vec<u8>`: nothing is allocated per span or attribute.
//! (The exceptions are rare: a non-empty W3C `trace_state` is rendered with
//! `TraceState::header`, the only public way to read it, and two scopes that
//! differ only in attribute order are compared with the SDK's allocating `==`.)
//!
//! # Wire format
//!
//! The protobuf primitives are in [`super::wire`]. Like prost we write fields
//! in field-number order, omit
//! proto3 defaults (empty strings and bytes, zeros, empty repeated fields),
//! always write `oneof` members and `Some(..)` sub-messages (even if empty),
//! and use minimal varints, so the output is byte-for-byte what prost makes of
//! opentelemetry-proto's conversion (whose `ScopeSpans` are in order of first
//! appearance too: its `HashMap` only indexes them).
//!
//! An attribute's length is computed before it is written. A larger nested
//! message's length is not known until its body is written, so [`begin`]
//! reserves a guess of length bytes and [`end`] writes the minimal varint over
//! them, moving the body with `copy_within` only when the guess was wrong.
//!
//! # What guarantees it
//!
//! The property test in `encode_tests.rs` decodes this output with
//! opentelemetry-proto's generated types and compares it, whole, with the
//! library's `group_spans_by_resource_and_scope` for randomized resources and
//! batches (every attribute value kind, events, links, status, scopes), and
//! compares the bytes with prost's.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanData;

use super::wire::{
    LEN, begin, bytes, double, end, fixed32, fixed64, string, string_always, tag, uint, varint,
    varint_field, varint_len,
};

/// The OTLP flag bits `build_span_flags` adds: the parent's remoteness is
/// known (`0x100`), and it is remote (`0x200`).
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

/// Encodes batches of spans as OTLP `ExportTraceServiceRequest` protobuf bytes.
pub(crate) struct SpanEncoder {
    /// `ResourceSpans.resource` (field 1), key and length included.
    resource: Vec<u8>,
    /// `ResourceSpans.schema_url` (field 3), key and length included, or empty.
    schema_url: Vec<u8>,
}

impl Default for SpanEncoder {
    /// An encoder for an empty resource, as the SDK's exporters start before
    /// `set_resource`.
    fn default() -> Self {
        Self::new(&Resource::builder_empty().build())
    }
}

impl SpanEncoder {
    /// Pre-encodes `resource` (its attributes in `Resource::iter` order, as the
    /// library's `ResourceAttributesWithSchema` has them) and its schema URL.
    pub(crate) fn new(resource: &Resource) -> Self {
        let mut res = Vec::new();
        let at = begin(&mut res, 1, 2);
        for (key, value) in resource.iter() {
            key_value(&mut res, 1, key.as_str(), value);
        }
        end(&mut res, at);
        let mut schema_url = Vec::new();
        string(
            &mut schema_url,
            3,
            resource.schema_url().unwrap_or_default(),
        );
        Self {
            resource: res,
            schema_url,
        }
    }

    /// Appends the request for `spans` to `out` (the caller clears and reuses it).
    ///
    /// One `ResourceSpans`, then one `ScopeSpans` per distinct scope (by the
    /// SDK's `InstrumentationScope` equality) in order of first appearance, its
    /// spans in batch order, as `group_spans_by_resource_and_scope` has them.
    pub(crate) fn encode(&self, spans: &[SpanData], out: &mut Vec<u8>) {
        let resource_spans = begin(out, 1, 3);
        out.extend_from_slice(&self.resource);
        // The first span of each scope group: batches have one or two scopes,
        // so a linear scan beats a HashMap (and hashing every span's scope).
        let mut leaders: Vec<usize> = Vec::new();
        for (i, span) in spans.iter().enumerate() {
            let scope = &span.instrumentation_scope;
            if !leaders
                .iter()
                .any(|&l| same_scope(&spans[l].instrumentation_scope, scope))
            {
                leaders.push(i);
            }
        }
        for &leader in &leaders {
            let first = &spans[leader].instrumentation_scope;
            let scope_spans = begin(out, 2, 3);
            instrumentation_scope(out, first);
            // The leader itself unconditionally: a scope with a NaN attribute
            // is unequal even to itself (the library then makes it a group of
            // one, as here).
            span(out, &spans[leader]);
            for s in &spans[leader + 1..] {
                if same_scope(first, &s.instrumentation_scope) {
                    span(out, s);
                }
            }
            string(out, 3, first.schema_url().unwrap_or_default());
            end(out, scope_spans);
        }
        out.extend_from_slice(&self.schema_url);
        end(out, resource_spans);
    }
}

/// `InstrumentationScope`'s `==` (attribute order does not matter), without
/// its two allocations when the attributes are in the same order.
fn same_scope(a: &InstrumentationScope, b: &InstrumentationScope) -> bool {
    if a.name() != b.name() || a.version() != b.version() || a.schema_url() != b.schema_url() {
        return false;
    }
    a.attributes().eq(b.attributes()) || a == b
}

/// `common.v1.InstrumentationScope` as `ScopeSpans.scope` (field 1); its
/// `dropped_attributes_count` is always 0.
fn instrumentation_scope(out: &mut Vec<u8>, scope: &InstrumentationScope) {
    let at = begin(out, 1, 1);
    string(out, 1, scope.name());
    string(out, 2, scope.version().unwrap_or_default());
    attributes(out, 3, scope.attributes());
    end(out, at);
}

/// `trace.v1.Span` as `ScopeSpans.spans` (field 2).
fn span(out: &mut Vec<u8>, span: &SpanData) {
    let at = begin(out, 2, 2);
    let ctx = &span.span_context;
    bytes(out, 1, &ctx.trace_id().to_bytes());
    bytes(out, 2, &ctx.span_id().to_bytes());
    trace_state(out, 3, ctx.trace_state());
    // A root span's INVALID (all-zero) parent is omitted, not sent as 8 zeros.
    if span.parent_span_id != SpanId::INVALID {
        bytes(out, 4, &span.parent_span_id.to_bytes());
    }
    string(out, 5, &span.name);
    let kind = match span.span_kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    };
    uint(out, 6, kind);
    fixed64(out, 7, nanos(span.start_time));
    fixed64(out, 8, nanos(span.end_time));
    attributes(out, 9, &span.attributes);
    uint(out, 10, span.dropped_attributes_count.into());
    for event in span.events.iter() {
        let at = begin(out, 11, 1);
        fixed64(out, 1, nanos(event.timestamp));
        string(out, 2, &event.name);
        attributes(out, 3, &event.attributes);
        uint(out, 4, event.dropped_attributes_count.into());
        end(out, at);
    }
    uint(out, 12, span.events.dropped_count.into());
    for link in span.links.iter() {
        let at = begin(out, 13, 1);
        let ctx = &link.span_context;
        bytes(out, 1, &ctx.trace_id().to_bytes());
        bytes(out, 2, &ctx.span_id().to_bytes());
        trace_state(out, 3, ctx.trace_state());
        attributes(out, 4, &link.attributes);
        uint(out, 5, link.dropped_attributes_count.into());
        // A link's flags use the linked context's own remoteness.
        fixed32(out, 6, flags(ctx, ctx.is_remote()));
        end(out, at);
    }
    uint(out, 14, span.links.dropped_count.into());
    // `status` is always present, even when Unset (an empty message).
    let status = begin(out, 15, 1);
    let code = match &span.status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { description } => {
            string(out, 2, description);
            2
        }
    };
    uint(out, 3, code);
    end(out, status);
    // Field 16, so last: the W3C trace flags plus "parent remoteness known"
    // (never 0, so always written).
    fixed32(out, 16, flags(ctx, span.parent_span_is_remote));
    end(out, at);
}

/// opentelemetry-proto's `build_span_flags`.
fn flags(ctx: &SpanContext, remote: bool) -> u32 {
    u32::from(ctx.trace_flags().to_u8()) | HAS_IS_REMOTE | if remote { IS_REMOTE } else { 0 }
}

/// opentelemetry-proto's `to_nanos`: times before the epoch become 0, and the
/// `u128` nanoseconds are truncated to `u64` (wrapping after the year 2554).
fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A `TraceState` as its W3C header (`k=v,k2=v2`), or nothing when empty.
fn trace_state(out: &mut Vec<u8>, field: u32, state: &TraceState) {
    if *state != TraceState::NONE {
        string(out, field, &state.header());
    }
}

/// Repeated `common.v1.KeyValue`.
fn attributes<'a>(out: &mut Vec<u8>, field: u32, attrs: impl IntoIterator<Item = &'a KeyValue>) {
    for kv in attrs {
        key_value(out, field, kv.key.as_str(), &kv.value);
    }
}

/// One `common.v1.KeyValue`; its `value` is always present. Strings and
/// scalars, nearly every attribute, have their lengths known up front, so
/// nothing needs fixing up afterwards.
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    if short_string_pair(out, field, key, value) {
        return;
    }
    let Some(value_len) = scalar_len(value) else {
        let at = begin(out, field, 1);
        string(out, 1, key);
        any_value(out, 2, value);
        end(out, at);
        return;
    };
    let key_len = if key.is_empty() {
        0
    } else {
        1 + varint_len(key.len() as u64) + key.len()
    };
    let body = key_len + 1 + varint_len(value_len as u64) + value_len;
    out.reserve(2 + varint_len(body as u64) + body);
    tag(out, field, LEN);
    varint(out, body as u64);
    string(out, 1, key);
    tag(out, 2, LEN);
    varint(out, value_len as u64);
    scalar(out, value);
}

/// The common case, a short key with a short string value (every length
/// under 128, so each is one byte): four fixed-size writes and two copies,
/// instead of a varint and a capacity check per byte. Returns false, having
/// written nothing, for anything else. The bytes are the general path's.
#[inline]
fn short_string_pair(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) -> bool {
    let Value::String(value) = value else {
        return false;
    };
    let (key, value) = (key.as_bytes(), value.as_str().as_bytes());
    // KeyValue { key (1), value (2): AnyValue { string_value (1) } }
    let any_value = 2 + value.len();
    let body = 2 + key.len() + 2 + any_value;
    if key.is_empty() || body >= 128 || field >= 16 {
        return false;
    }
    let field_tag = (field << 3 | LEN) as u8;
    out.reserve(2 + body);
    out.extend_from_slice(&[field_tag, body as u8, 1 << 3 | LEN as u8, key.len() as u8]);
    out.extend_from_slice(key);
    out.extend_from_slice(&[
        2 << 3 | LEN as u8,
        any_value as u8,
        1 << 3 | LEN as u8,
        value.len() as u8,
    ]);
    out.extend_from_slice(value);
    true
}

/// The length of a non-array `AnyValue`'s body, or `None` for an array.
#[inline]
fn scalar_len(value: &Value) -> Option<usize> {
    Some(match value {
        Value::String(s) => 1 + varint_len(s.as_str().len() as u64) + s.as_str().len(),
        Value::Bool(_) => 2,
        Value::I64(i) => 1 + varint_len(*i as u64),
        Value::F64(_) => 9,
        Value::Array(_) => return None,
        // The library panics on kinds newer than 0.33; an empty `AnyValue`
        // ("no value") is kinder.
        _ => 0,
    })
}

/// A non-array `AnyValue`'s body: a `oneof`, so the member is written even
/// when it is the default (`false`, `0`, `""`).
#[inline]
fn scalar(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => string_always(out, 1, s.as_str()),
        Value::Bool(b) => varint_field(out, 2, u64::from(*b)),
        Value::I64(i) => varint_field(out, 3, *i as u64),
        Value::F64(f) => double(out, 4, *f),
        _ => {}
    }
}

/// `common.v1.AnyValue` as `field`.
fn any_value(out: &mut Vec<u8>, field: u32, value: &Value) {
    if let Some(len) = scalar_len(value) {
        tag(out, field, LEN);
        varint(out, len as u64);
        scalar(out, value);
        return;
    }
    let at = begin(out, field, 1);
    if let Value::Array(array) = value {
        let values = begin(out, 5, 1);
        // Each element is an `AnyValue` in `ArrayValue.values` (field 1).
        match array {
            Array::Bool(v) => v.iter().for_each(|&b| any_value(out, 1, &Value::Bool(b))),
            Array::I64(v) => v.iter().for_each(|&i| any_value(out, 1, &Value::I64(i))),
            Array::F64(v) => v.iter().for_each(|&f| any_value(out, 1, &Value::F64(f))),
            Array::String(v) => v.iter().for_each(|s| {
                let len = 1 + varint_len(s.as_str().len() as u64) + s.as_str().len();
                tag(out, 1, LEN);
                varint(out, len as u64);
                string_always(out, 1, s.as_str());
            }),
            // The library panics on kinds newer than 0.33; an empty array is kinder.
            _ => {}
        }
        end(out, values);
    }
    end(out, at);
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
