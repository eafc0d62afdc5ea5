//! A fake OpenTelemetry collector: OTLP over gRPC (tonic) and over HTTP/protobuf,
//! in plain text or over TLS (optionally requiring a client certificate),
//! keeping every exported span for assertions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use tonic::codec::CompressionEncoding;

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
    /// Each link's (trace id, span id).
    pub links: Vec<(String, String)>,
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
struct Store {
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    /// The headers of each request (a gRPC request's metadata).
    headers: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
    /// TLS handshakes that failed: the client was refused, or refused us.
    failed_handshakes: Arc<AtomicUsize>,
    /// Export requests received, refused ones included.
    attempts: Arc<AtomicUsize>,
    /// Answers for the next requests instead of taking them: HTTP statuses
    /// (the gRPC service maps them to codes, see [`grpc_code`]).
    refusals: Arc<Mutex<std::collections::VecDeque<u16>>>,
}

impl Store {
    /// Counts a request, and returns the refusal it gets, if one is queued.
    fn attempt(&self) -> Option<u16> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        self.refusals.lock().expect("refusals").pop_front()
    }

    fn push(&self, request: ExportTraceServiceRequest) {
        self.requests.lock().expect("store").push(request);
    }

    fn spans(&self) -> Vec<Span> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let requests = self.requests.lock().expect("store");
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
                            links: s
                                .links
                                .iter()
                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                .collect(),
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
        if let Some(status) = self.attempt() {
            return Err(tonic::Status::new(grpc_code(status), "refused by the test"));
        }
        let headers = request.metadata().clone().into_headers();
        self.headers.lock().expect("headers").push(headers);
        self.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// A running fake collector.
pub struct Collector {
    pub addr: SocketAddr,
    scheme: &'static str,
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
            scheme: "http",
            store,
            server,
        }
    }

    /// OTLP/HTTP with protobuf bodies on 127.0.0.1:0, at `/v1/traces`.
    pub async fn http() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let store = Store::default();
        let router = http_router(store.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            addr,
            scheme: "http",
            store,
            server,
        }
    }

    /// OTLP/gRPC over TLS on 127.0.0.1:0.
    pub async fn grpc_tls(tls: &ServerTls) -> Self {
        let store = Store::default();
        let router = tonic::service::Routes::new(
            TraceServiceServer::new(store.clone()).accept_compressed(CompressionEncoding::Gzip),
        )
        .prepare()
        .into_axum_router();
        Self::serve_tls(tls, store, router).await
    }

    /// OTLP/HTTP over TLS on 127.0.0.1:0, at `/v1/traces`.
    pub async fn http_tls(tls: &ServerTls) -> Self {
        let store = Store::default();
        let router = http_router(store.clone());
        Self::serve_tls(tls, store, router).await
    }

    async fn serve_tls(tls: &ServerTls, store: Store, router: axum::Router) -> Self {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::service::TowerToHyperService;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
        let failed = store.failed_handshakes.clone();
        let server = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                let (acceptor, router, failed) = (acceptor.clone(), router.clone(), failed.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router))
                        .await;
                });
            }
        });
        Self {
            addr,
            scheme: "https",
            store,
            server,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Refuses the next requests, one per status: an HTTP collector answers
    /// it, a gRPC one the matching code (503 is UNAVAILABLE, 400 is
    /// INVALID_ARGUMENT).
    pub fn refuse_next(&self, statuses: &[u16]) {
        self.store
            .refusals
            .lock()
            .expect("refusals")
            .extend(statuses);
    }

    /// Export requests received so far, refused ones included.
    pub fn attempts(&self) -> usize {
        self.store.attempts.load(Ordering::Relaxed)
    }

    /// The headers of every request received (a gRPC request's metadata).
    pub fn headers(&self) -> Vec<axum::http::HeaderMap> {
        self.store.headers.lock().expect("headers").clone()
    }

    /// How many TLS handshakes failed (on a TLS collector).
    pub fn failed_handshakes(&self) -> usize {
        self.store.failed_handshakes.load(Ordering::Relaxed)
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

/// The gRPC code a refusal's HTTP status stands for.
fn grpc_code(status: u16) -> tonic::Code {
    match status {
        503 => tonic::Code::Unavailable,
        400 => tonic::Code::InvalidArgument,
        other => panic!("no gRPC code chosen for HTTP {other}"),
    }
}

/// `/v1/traces`: protobuf bodies, gzip-compressed or not. It answers CORS
/// preflights and allows every origin, as a collector configured for a web
/// page does (the demo page's browser exports here).
fn http_router(store: Store) -> axum::Router {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, header};
    use prost::Message as _;

    async fn traces(State(store): State<Store>, headers: HeaderMap, body: Bytes) -> StatusCode {
        if let Some(status) = store.attempt() {
            return StatusCode::from_u16(status).expect("a status");
        }
        let body = match headers.get(header::CONTENT_ENCODING) {
            None => body.to_vec(),
            Some(encoding) if encoding == "gzip" => {
                let mut plain = Vec::new();
                let read = std::io::Read::read_to_end(
                    &mut flate2::read::GzDecoder::new(&body[..]),
                    &mut plain,
                );
                if read.is_err() {
                    return StatusCode::BAD_REQUEST;
                }
                plain
            }
            Some(_) => return StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        store.headers.lock().expect("headers").push(headers);
        match ExportTraceServiceRequest::decode(&body[..]) {
            Ok(request) => {
                store.push(request);
                StatusCode::OK
            }
            Err(_) => StatusCode::BAD_REQUEST,
        }
    }
    async fn preflight() -> impl axum::response::IntoResponse {
        (
            StatusCode::NO_CONTENT,
            [
                (header::ACCESS_CONTROL_ALLOW_METHODS, "POST"),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, "content-type"),
            ],
        )
    }
    async fn allow_any_origin(mut response: axum::response::Response) -> axum::response::Response {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            axum::http::HeaderValue::from_static("*"),
        );
        response
    }
    axum::Router::new()
        .route("/v1/traces", axum::routing::post(traces).options(preflight))
        .layer(axum::middleware::map_response(allow_any_origin))
        .with_state(store)
}

/// A TLS collector's side: its certificate chain and key, and the CA its
/// clients' certificates must chain to (mutual TLS), if it requires one.
pub struct ServerTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub client_ca_pem: Option<String>,
}

impl ServerTls {
    fn config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("server key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match &self.client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                    roots.add(cert.expect("client CA")).expect("client CA");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).expect("server config");
        // gRPC clients insist on h2; OTLP/HTTP clients may speak either.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// An OTLP endpoint that accepts connections and never answers, and the task
/// holding them (abort it when done).
pub async fn hanging_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    (endpoint, held)
}
