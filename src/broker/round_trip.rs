//! A round trip through the NATS server, proving it has processed everything
//! this client sent before (a SUB, in particular).
//!
//! async-nats's `Client::flush` only writes the client's buffer to the socket;
//! it returns before the server has read it. So a node that flushed a SUB and
//! then told its WebSocket client "subscribed" could still miss a message
//! published at once on another node: the server did not know of the
//! subscription yet.
//!
//! The server handles one connection's protocol messages in order, so when a
//! request this client sent comes back answered, every SUB sent before it has
//! taken effect. The answer comes from the node's own responder, on a subject
//! unique to the node: it works whoever else listens (a `>` tap included) and
//! needs no server feature beyond request and reply.

use async_nats::{Client, RequestError, SubscribeError};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;

pub(super) struct RoundTrip {
    client: Client,
    subject: String,
    responder: JoinHandle<()>,
}

impl RoundTrip {
    /// Subscribes the responder. While NATS is unreachable the subscription
    /// waits in the client, which sends it once connected (and again after
    /// every reconnect), like any other.
    pub(crate) async fn start(client: &Client) -> Result<Self, SubscribeError> {
        let subject = client.new_inbox();
        let mut requests = client.subscribe(subject.clone()).await?;
        let replies = client.clone();
        let responder = tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    // A lost reply fails that round trip by its timeout.
                    let _ = replies.publish(reply, Bytes::new()).await;
                }
            }
        });
        Ok(Self {
            client: client.clone(),
            subject,
            responder,
        })
    }

    /// Returns once the server has answered a request sent after everything
    /// this client sent so far.
    pub(crate) async fn complete(&self) -> Result<(), RequestError> {
        self.client
            .request(self.subject.clone(), Bytes::new())
            .await
            .map(drop)
    }
}

impl Drop for RoundTrip {
    fn drop(&mut self) {
        self.responder.abort();
    }
}
