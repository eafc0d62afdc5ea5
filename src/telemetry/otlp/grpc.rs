//! OTLP/gRPC: one unary `TraceService/Export` call per batch, over a tonic
//! channel, with the request already encoded ([`super::encode`]). The codec
//! passes those bytes through; tonic frames, compresses and sends them.
//!
//! The channel runs on a runtime of its own, one thread named `otlp-grpc`,
//! not on the gateway's: framing a batch of thousands of spans into HTTP/2
//! frames takes milliseconds, and on a gateway worker it would hold up every
//! connection that worker serves (the rooms bench at half rate, 1 % traced,
//! measured p99 latencies of 11–12 ms instead of 3–5 ms that way). On a thread
//! of its own the kernel shares the CPU between it and the gateway's workers.

use std::time::Duration;

use bytes::{Buf as _, BufMut as _, Bytes};
use http::uri::PathAndQuery;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};

use super::settings::Settings;
use super::{Failure, error_chain};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct GrpcSender {
    channel: Channel,
    metadata: MetadataMap,
    gzip: bool,
    timeout: Duration,
    /// The exporter's own runtime; shut down without waiting when dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for GrpcSender {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which may not happen inside another.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl GrpcSender {
    /// A lazily connecting channel, on a runtime of its own.
    pub fn new(settings: &Settings, tls: Option<ClientTlsConfig>) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-grpc")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the exporter's runtime: {e}"))?;
        let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
            .map_err(|e| e.to_string())?
            .timeout(settings.timeout)
            .user_agent(super::USER_AGENT)
            .map_err(|e| e.to_string())?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls).map_err(|e| e.to_string())?;
        }
        let mut metadata = MetadataMap::new();
        for (name, value) in &settings.headers {
            // HTTP header names are valid ASCII metadata keys; a `-bin` key
            // would need base64 values, which the variables cannot carry.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(value.as_bytes()),
            ) {
                metadata.append(key, value);
            }
        }
        // The channel's worker is spawned on the runtime current here.
        let channel = {
            let _on = runtime.enter();
            endpoint.connect_lazy()
        };
        Ok(Self {
            channel,
            metadata,
            gzip: settings.gzip,
            timeout: settings.timeout,
            runtime: Some(runtime),
        })
    }

    /// Sends one encoded request. The call runs on the exporter's runtime (the
    /// batch processor's own thread has none), and its answer is returned here.
    pub async fn send(&self, body: Bytes) -> Result<Bytes, Failure> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        if self.gzip {
            grpc = grpc
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let mut request = tonic::Request::new(body);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(self.timeout);
        let call = async move {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let path = PathAndQuery::from_static(EXPORT);
            grpc.unary(request, path, RawCodec).await
        };
        let Some(runtime) = &self.runtime else {
            return Err(Failure::permanent("the exporter is shut down".to_owned()));
        };
        match runtime.spawn(call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(failure(&status)),
            Err(e) => Err(Failure::permanent(format!("the export task failed: {e}"))),
        }
    }
}

/// Whether a status is worth a retry, by the OTLP specification's list.
fn failure(status: &Status) -> Failure {
    let retry = matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
            | Code::ResourceExhausted
    );
    // The message may echo a token back; the code and tonic's own source
    // chain (connection errors) are what the log shows.
    let message = match std::error::Error::source(status) {
        Some(source) => format!("gRPC status {:?}: {}", status.code(), error_chain(source)),
        None => format!("gRPC status {:?}", status.code()),
    };
    Failure { message, retry }
}

/// Sends bytes as they are and reads the answer as bytes.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
