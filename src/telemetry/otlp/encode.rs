//! Encodes the SDK's `SpanData` as an OTLP `ExportTraceServiceRequest`.
