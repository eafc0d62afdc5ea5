//! A fake OpenTelemetry collector: OTLP over gRPC (tonic) and over HTTP/protobuf,
//! keeping every exported span for assertions.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::task::JoinHandle;

use crate::helpers::poll_until;

/// One received span with its resource, flattened for assertions.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: Vec<KeyValue>,
    pub resource: Vec<KeyValue>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<String> {
        find(&self.attributes, key)
    }
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        find(&self.resource, key)
    }
}

fn find(attrs: &[KeyValue], key: &str) -> Option<String> {
    let value = attrs
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    Some(match value {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        AnyValue::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Store {
    fn push(&self, request: ExportTraceServiceRequest) {
        self.0.lock().expect("store").push(request);
    }

    fn spans(&self) -> Vec<Span> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let requests = self.0.lock().expect("store");
        let mut out = Vec::new();
        for request in requests.iter() {
            for rs in &request.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(Span {
                            name: s.name.clone(),
                            kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                            trace_id: hex(&s.trace_id),
                            span_id: hex(&s.span_id),
                            parent_span_id: hex(&s.parent_span_id),
                            attributes: s.attributes.clone(),
                            resource: resource.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running fake collector.
pub struct Collector {
    pub addr: SocketAddr,
    store: Store,
    server: JoinHandle<()>,
}

impl Collector {
    /// OTLP/gRPC on 127.0.0.1:0.
    pub async fn grpc() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let store = Store::default();
        let service = TraceServiceServer::new(store.clone());
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await;
        });
        Self {
            addr,
            store,
            server,
        }
    }

    /// OTLP/HTTP with protobuf bodies on 127.0.0.1:0, at `/v1/traces`.
    pub async fn http() -> Self {
        use axum::body::Bytes;
        use axum::extract::State;
        use prost::Message as _;

        async fn traces(State(store): State<Store>, body: Bytes) -> axum::http::StatusCode {
            match ExportTraceServiceRequest::decode(body) {
                Ok(request) => {
                    store.push(request);
                    axum::http::StatusCode::OK
                }
                Err(_) => axum::http::StatusCode::BAD_REQUEST,
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let store = Store::default();
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(traces))
            .with_state(store.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            store,
            server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Span> {
        self.store.spans()
    }

    /// Polls until `ready` holds for the received spans.
    pub async fn spans_when(&self, what: &str, ready: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        poll_until(async || {
            let spans = self.spans();
            if ready(&spans) {
                return Ok(spans);
            }
            let seen: Vec<_> = spans.iter().map(|s| (&s.name, &s.trace_id)).collect();
            Err(format!("spans: {what}; have {seen:#?}"))
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}
