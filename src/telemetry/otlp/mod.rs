//! wsgate's own OTLP span exporter: spans encoded straight from the SDK's
//! `SpanData` to protobuf bytes (`encode`), sent over gRPC or HTTP.

pub(crate) mod encode;
