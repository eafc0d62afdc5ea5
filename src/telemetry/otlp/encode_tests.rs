//! The encoder against opentelemetry-proto's conversion: randomized resources
//! and batches, decoded with the generated types and compared whole, and the
//! bytes compared with prost's encoding of the library's structs.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, Key, KeyValue, StringValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use proptest::prelude::*;
use prost::Message;

use super::SpanEncoder;

/// What the library's exporter sends for `batch`.
fn library(resource: &Resource, batch: Vec<SpanData>) -> ExportTraceServiceRequest {
    let resource = ResourceAttributesWithSchema::from(resource);
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, &resource),
    }
}

/// Encodes `batch` after a prefix (`encode` appends), decodes it, and checks
/// it against the library: field by field with the scope groups in any
/// order, then byte for byte.
fn check(resource: &Resource, batch: Vec<SpanData>) -> Result<(), TestCaseError> {
    let prefix = b"kept";
    let mut out = prefix.to_vec();
    SpanEncoder::new(resource).encode(&batch, &mut out);
    prop_assert_eq!(&out[..prefix.len()], prefix);
    let ours = &out[prefix.len()..];
    let decoded = ExportTraceServiceRequest::decode(ours)
        .map_err(|e| TestCaseError::fail(format!("our bytes do not decode: {e}")))?;
    let expected = library(resource, batch);
    prop_assert_eq!(sorted_scopes(decoded), sorted_scopes(expected.clone()));
    // The library's scope groups are in order of first appearance too (its
    // HashMap only indexes them), so the bytes are the same.
    prop_assert!(
        ours == expected.encode_to_vec(),
        "same meaning, other bytes"
    );
    Ok(())
}

/// `request` with its `ScopeSpans` in a canonical order.
fn sorted_scopes(mut request: ExportTraceServiceRequest) -> ExportTraceServiceRequest {
    for resource_spans in &mut request.resource_spans {
        resource_spans
            .scope_spans
            .sort_by_cached_key(Message::encode_to_vec);
    }
    request
}

const STATICS: &[&str] = &["", "http.route", "é✓ 名前", "a"];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z._]{1,12}", "\\PC{0,16}"]
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        prop::sample::select(STATICS).prop_map(Key::from_static_str),
        text().prop_map(Key::new),
        text().prop_map(|s| Key::new(Arc::<str>::from(s))),
    ]
}

fn string_value() -> impl Strategy<Value = StringValue> {
    prop_oneof![
        prop::sample::select(STATICS).prop_map(StringValue::from),
        text().prop_map(StringValue::from),
        text().prop_map(|s| StringValue::from(Arc::<str>::from(s))),
    ]
}

/// Any f64 but NaN (unequal to itself, so no struct comparison can pass).
fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::INFINITY),
        any::<f64>().prop_filter("NaN", |f| !f.is_nan()),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let few = || 0..4usize;
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0), Just(-1), any::<i64>()].prop_map(Value::I64),
        double().prop_map(Value::F64),
        string_value().prop_map(Value::String),
        prop::collection::vec(any::<bool>(), few()).prop_map(|v| Value::Array(Array::Bool(v))),
        prop::collection::vec(any::<i64>(), few()).prop_map(|v| Value::Array(Array::I64(v))),
        prop::collection::vec(double(), few()).prop_map(|v| Value::Array(Array::F64(v))),
        prop::collection::vec(string_value(), few()).prop_map(|v| Value::Array(Array::String(v))),
    ]
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(
        (key(), value()).prop_map(|(k, v)| KeyValue::new(k, v)),
        0..5,
    )
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(1), any::<u32>()]
}

/// Before the epoch (the library sends 0), at it, after it, and past the
/// year 2554, where the library's `as u64` wraps.
fn time() -> impl Strategy<Value = SystemTime> {
    prop_oneof![
        Just(UNIX_EPOCH),
        (1..u64::MAX).prop_map(|n| UNIX_EPOCH + Duration::from_nanos(n)),
        (1..1u64 << 40).prop_map(|n| UNIX_EPOCH - Duration::from_nanos(n)),
        Just(UNIX_EPOCH + Duration::from_secs(20_000_000_000)),
    ]
}

fn trace_state() -> impl Strategy<Value = TraceState> {
    prop_oneof![
        Just(TraceState::NONE),
        prop::collection::vec(("[a-z][a-z0-9_]{0,8}", "[A-Za-z0-9]{1,8}"), 1..3)
            .prop_map(|kvs| TraceState::from_key_value(kvs).unwrap()),
    ]
}

fn span_context() -> impl Strategy<Value = SpanContext> {
    (
        prop_oneof![Just(0), any::<u128>()],
        prop_oneof![Just(0), any::<u64>()],
        any::<u8>(),
        any::<bool>(),
        trace_state(),
    )
        .prop_map(|(trace, span, flags, remote, state)| {
            SpanContext::new(
                TraceId::from(trace),
                SpanId::from(span),
                TraceFlags::new(flags),
                remote,
                state,
            )
        })
}

fn name() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![
        prop::sample::select(STATICS).prop_map(Cow::Borrowed),
        text().prop_map(Cow::Owned),
    ]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Unset),
        Just(Status::Ok),
        name().prop_map(|description| Status::Error { description }),
    ]
}

fn events() -> impl Strategy<Value = SpanEvents> {
    let event = (name(), time(), attributes(), count())
        .prop_map(|(name, time, attrs, dropped)| Event::new(name, time, attrs, dropped));
    (prop::collection::vec(event, 0..3), count()).prop_map(|(events, dropped_count)| {
        let mut span_events = SpanEvents::default();
        span_events.events = events;
        span_events.dropped_count = dropped_count;
        span_events
    })
}

fn links() -> impl Strategy<Value = SpanLinks> {
    let link = (span_context(), attributes(), count())
        .prop_map(|(ctx, attrs, dropped)| Link::new(ctx, attrs, dropped));
    (prop::collection::vec(link, 0..3), count()).prop_map(|(links, dropped_count)| {
        let mut span_links = SpanLinks::default();
        span_links.links = links;
        span_links.dropped_count = dropped_count;
        span_links
    })
}

/// A scope; its attribute keys are distinct, so that equality ignoring order
/// is well defined.
fn scope() -> impl Strategy<Value = InstrumentationScope> {
    (
        name(),
        prop::option::of(name()),
        prop::option::of(name()),
        prop::collection::vec(value(), 0..3),
    )
        .prop_map(|(name, version, schema_url, values)| {
            let mut builder = InstrumentationScope::builder(name).with_attributes(
                values
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| KeyValue::new(format!("scope.{i}"), v)),
            );
            if let Some(version) = version {
                builder = builder.with_version(version);
            }
            if let Some(schema_url) = schema_url {
                builder = builder.with_schema_url(schema_url);
            }
            builder.build()
        })
}

/// A span without its scope (the batch gives it one).
fn span() -> impl Strategy<Value = SpanData> {
    let kind = prop::sample::select(vec![
        SpanKind::Client,
        SpanKind::Server,
        SpanKind::Producer,
        SpanKind::Consumer,
        SpanKind::Internal,
    ]);
    (
        (
            span_context(),
            prop_oneof![Just(0), any::<u64>()],
            any::<bool>(),
            kind,
        ),
        (name(), time(), time(), attributes(), count()),
        (events(), links(), status()),
    )
        .prop_map(
            |(
                (span_context, parent, parent_span_is_remote, span_kind),
                (name, start_time, end_time, attributes, dropped_attributes_count),
                (events, links, status),
            )| SpanData {
                span_context,
                parent_span_id: SpanId::from(parent),
                parent_span_is_remote,
                span_kind,
                name,
                start_time,
                end_time,
                attributes,
                dropped_attributes_count,
                events,
                links,
                status,
                instrumentation_scope: InstrumentationScope::default(),
            },
        )
}

/// Up to 8 spans over one to three scopes, mixed; a span may carry its
/// scope's attributes reversed (the same scope to the SDK).
fn batch() -> impl Strategy<Value = Vec<SpanData>> {
    (
        prop::collection::vec(scope(), 1..=3),
        prop::collection::vec((span(), any::<prop::sample::Index>(), any::<bool>()), 0..8),
    )
        .prop_map(|(scopes, spans)| {
            spans
                .into_iter()
                .map(|(mut span, which, reversed)| {
                    let scope = which.get(&scopes);
                    span.instrumentation_scope = if reversed {
                        let mut builder = InstrumentationScope::builder(scope.name().to_owned())
                            .with_attributes(
                                scope
                                    .attributes()
                                    .cloned()
                                    .collect::<Vec<_>>()
                                    .into_iter()
                                    .rev(),
                            );
                        if let Some(version) = scope.version() {
                            builder = builder.with_version(version.to_owned());
                        }
                        if let Some(schema_url) = scope.schema_url() {
                            builder = builder.with_schema_url(schema_url.to_owned());
                        }
                        builder.build()
                    } else {
                        scope.clone()
                    };
                    span
                })
                .collect()
        })
}

fn resource() -> impl Strategy<Value = Resource> {
    (attributes(), prop::option::of(name())).prop_map(|(attrs, schema_url)| match schema_url {
        Some(url) => Resource::builder_empty()
            .with_schema_url(attrs, url)
            .build(),
        None => Resource::builder_empty().with_attributes(attrs).build(),
    })
}

proptest! {
    #[test]
    fn encodes_what_the_library_sends(resource in resource(), batch in batch()) {
        check(&resource, batch)?;
    }
}

fn plain_span(name: &'static str, attributes: Vec<KeyValue>) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from(7),
            SpanId::from(9),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: SpanKind::Server,
        name: name.into(),
        start_time: UNIX_EPOCH + Duration::from_secs(1),
        end_time: UNIX_EPOCH + Duration::from_secs(2),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: InstrumentationScope::builder("wsgate").build(),
    }
}

#[test]
fn empty_batch_matches_the_library() {
    let resource = Resource::builder_empty()
        .with_schema_url([KeyValue::new("service.name", "wsgate")], "https://s")
        .build();
    check(&resource, vec![]).unwrap();
    // The library still sends one ResourceSpans, with the resource.
    let mut out = Vec::new();
    SpanEncoder::new(&resource).encode(&[], &mut out);
    let decoded = ExportTraceServiceRequest::decode(&out[..]).unwrap();
    assert_eq!(decoded.resource_spans.len(), 1);
    assert!(decoded.resource_spans[0].scope_spans.is_empty());
}

#[test]
fn default_is_the_empty_resource() {
    let mut ours = Vec::new();
    SpanEncoder::default().encode(&[plain_span("s", vec![])], &mut ours);
    let expected = library(
        &Resource::builder_empty().build(),
        vec![plain_span("s", vec![])],
    );
    assert_eq!(ours, expected.encode_to_vec());
}

/// Lengths needing 2, 3 and 4 varint bytes, where `begin` reserved fewer,
/// and nested: the attribute, its span, the scope group and the request.
#[test]
fn long_attributes_fix_up_lengths() {
    for len in [127, 128, 200, 16_383, 16_384, 20_000, 2_097_152] {
        let long = "x".repeat(len);
        let span = plain_span("long", vec![KeyValue::new("k", long.clone())]);
        let resource = Resource::builder_empty()
            .with_attributes([KeyValue::new("r", long)])
            .build();
        check(&resource, vec![span.clone(), span]).unwrap();
    }
}

#[test]
fn varint_lengths() {
    for (v, len) in [
        (0, 1),
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (u64::MAX, 10),
    ] {
        assert_eq!(super::varint_len(v), len, "{v}");
    }
}
