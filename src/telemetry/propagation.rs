//! W3C trace context in and out: strict parsing, and the carriers wsgate uses.
//!
//! The SDK's `TraceContextPropagator` is lenient (it parses ids with
//! `from_str_radix`, so a 16-character trace id or a `+` sign pass). The W3C
//! spec, and wsgate's promise that an invalid `traceparent` starts a new root
//! trace, need exact rules, so [`StrictTraceContext`] checks the header's shape
//! before delegating.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Whether `value` is a well-formed W3C `traceparent` (trace-context level 1):
/// `vv-<32 hex>-<16 hex>-<2 hex>`, lowercase, version not `ff`, non-zero ids.
/// Versions above `00` may append `-`-separated fields, per the spec.
pub fn is_valid_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    if b.len() < 55 {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace_id, span_id, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    let dashes = b[2] == b'-' && b[35] == b'-' && b[52] == b'-';
    let rest_ok = match version {
        b"00" => b.len() == 55,
        _ => b.len() == 55 || b[55] == b'-',
    };
    dashes
        && rest_ok
        && hex(version)
        && version != b"ff"
        && hex(trace_id)
        && hex(span_id)
        && hex(flags)
        && trace_id.iter().any(|&c| c != b'0')
        && span_id.iter().any(|&c| c != b'0')
}

/// The W3C propagator with the strict `traceparent` check in front: a carrier
/// with an invalid header yields the context it was given, unchanged.
#[derive(Debug, Default)]
pub struct StrictTraceContext {
    inner: TraceContextPropagator,
}

impl StrictTraceContext {
    pub fn new() -> Self {
        Self::default()
    }
}

impl TextMapPropagator for StrictTraceContext {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        self.inner.inject_context(cx, injector);
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        match extractor.get(TRACEPARENT) {
            Some(tp) if is_valid_traceparent(tp.trim()) => {
                self.inner.extract_with_context(cx, extractor)
            }
            _ => cx.clone(),
        }
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.inner.fields()
    }
}

/// The two trace fields of a wire-protocol frame, as a carrier.
pub struct FrameFields<'a> {
    pub traceparent: Option<&'a str>,
    pub tracestate: Option<&'a str>,
}

impl Extractor for FrameFields<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The remote parent described by a frame's trace fields, or an empty context
/// (a new root) when they are absent or invalid.
pub fn extract_frame(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    StrictTraceContext::new().extract_with_context(
        &Context::new(),
        &FrameFields {
            traceparent,
            tracestate,
        },
    )
}

/// The remote parent described by HTTP request headers.
pub fn extract_headers(headers: &axum::http::HeaderMap) -> Context {
    StrictTraceContext::new().extract_with_context(
        &Context::new(),
        &opentelemetry_http::HeaderExtractor(headers),
    )
}

/// A `traceparent` value, built without the formatting machinery: it is made
/// for every delivered message, and `format!` of two hex ids costs more than
/// the rest of encoding the frame.
#[derive(Clone, Copy)]
pub struct Traceparent([u8; 55]);

impl Traceparent {
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits and dashes are ever written.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// A span context as a `traceparent` value; `None` when it is invalid (tracing
/// off and no parent), so frames simply omit the field.
pub fn traceparent(span: &SpanContext) -> Option<Traceparent> {
    if !span.is_valid() {
        return None;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let mut put = |at: usize, bytes: &[u8]| {
        for (i, b) in bytes.iter().enumerate() {
            out[at + 2 * i] = HEX[usize::from(b >> 4)];
            out[at + 2 * i + 1] = HEX[usize::from(b & 0xf)];
        }
    };
    put(3, &span.trace_id().to_bytes());
    put(36, &span.span_id().to_bytes());
    put(53, &[span.trace_flags().to_u8()]);
    Some(Traceparent(out))
}

/// Collects injected fields into a small list, for carriers like NATS headers.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(&'static str, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if !value.is_empty() {
            self.0.push((key, value));
        }
    }
}

/// The span context of `cx`'s active span.
pub fn span_context(cx: &Context) -> SpanContext {
    cx.span().span_context().clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SID: &str = "00f067aa0ba902b7";

    #[track_caller]
    fn check(tp: &str, valid: bool) {
        assert_eq!(is_valid_traceparent(tp), valid, "{tp:?}");
        let cx = extract_frame(Some(tp), None);
        assert_eq!(span_context(&cx).is_valid(), valid, "extracted {tp:?}");
    }

    #[test]
    fn accepts_exactly_the_w3c_shape() {
        check(&format!("00-{TID}-{SID}-01"), true);
        check(&format!("00-{TID}-{SID}-00"), true);
        check(&format!("01-{TID}-{SID}-01-future-field"), true);
        check(&format!("fe-{TID}-{SID}-01"), true);
    }

    #[test]
    fn refuses_what_the_sdk_would_let_through() {
        check(&format!("00-{}-{SID}-01", &TID[..16]), false);
        check(&format!("00-{TID}-{}-01", &SID[..4]), false);
        check(&format!("00-{TID}-{SID}-001"), false);
        check(&format!("00-{TID}-{SID}-1"), false);
        check(&format!("00-+{}-{SID}-01", &TID[1..]), false);
        check(&format!("0A-{TID}-{SID}-01"), false);
        check(&format!("00-{TID}-{SID}-01-extra"), false);
        check(&format!("00-{}-{SID}-01", TID.to_uppercase()), false);
        check(&format!("ff-{TID}-{SID}-01"), false);
        check(&format!("00-{}-{SID}-01", "0".repeat(32)), false);
        check(&format!("00-{TID}-{}-01", "0".repeat(16)), false);
        check(&format!("01-{TID}-{SID}-01x"), false);
        check("", false);
        check("garbage", false);
        check(&"é".repeat(40), false);
    }

    #[test]
    fn round_trips_with_tracestate() {
        let tp = format!("00-{TID}-{SID}-01");
        let cx = extract_frame(Some(&tp), Some("congo=t61rcWkgMzE"));
        let sc = span_context(&cx);
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            traceparent(&sc).as_ref().map(Traceparent::as_str),
            Some(tp.as_str())
        );
        let mut fields = Fields::default();
        StrictTraceContext::new().inject_context(&cx, &mut fields);
        assert_eq!(
            fields.0,
            vec![
                (TRACEPARENT, tp.clone()),
                (TRACESTATE, "congo=t61rcWkgMzE".into())
            ]
        );
    }

    #[test]
    fn invalid_context_has_no_traceparent() {
        assert!(traceparent(&SpanContext::empty_context()).is_none());
    }

    #[test]
    fn traceparent_formatting_matches_the_w3c_shape() {
        use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};
        let sc = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::NOT_SAMPLED,
            false,
            TraceState::default(),
        );
        let tp = traceparent(&sc).unwrap();
        assert_eq!(
            tp.as_str(),
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-00"
        );
        assert!(is_valid_traceparent(tp.as_str()));
    }
}
