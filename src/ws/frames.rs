//! What a session does with each client frame.
//!
//! Every frame is decoded, rate-limited, checked against the connection's
//! identity (its tenant and room permissions), handled, and answered: a reply,
//! or an error frame with a stable code. All of it is counted.

use opentelemetry::context::FutureExt as _;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::session::Session;
use crate::hub::Subscriber;
use crate::outbox::{CloseRequest, Outbound, Pushed};
use crate::protocol::{self, ClientFrame, ErrorCode, Publish, Reply};
use crate::room::{RoomKey, RoomName};
use crate::telemetry::{CloseReason, Origin, propagation};

impl Session {
    /// The key of one of this connection's rooms: rooms live within its tenant.
    pub(super) fn key(&self, room: RoomName) -> RoomKey {
        RoomKey::new(self.admitted.identity.tenant.clone(), room)
    }

    pub(super) async fn on_text(&mut self, text: Utf8Bytes) {
        let started = std::time::Instant::now();
        let frame_type = match protocol::decode(text.as_str()) {
            Ok(frame) => {
                let frame_type = frame.frame_type();
                if self.within_rate(frame_id(&frame)) {
                    self.on_frame(frame).await;
                }
                frame_type
            }
            Err(e) => {
                if self.within_rate(e.id.as_deref()) {
                    self.refuse(e.code, &e.message, e.id.as_deref());
                }
                e.frame_type
            }
        };
        self.state
            .metrics()
            .message_received(frame_type, started.elapsed());
    }

    /// Applies `--max-msgs-per-sec`. A frame over the limit is answered with
    /// `rate_limited` and not handled; a client that keeps sending a whole
    /// second's worth of frames into the limit is closed with 1008.
    pub(super) fn within_rate(&mut self, id: Option<&str>) -> bool {
        let Some(limiter) = &self.limiter else {
            return true;
        };
        if limiter.check().is_ok() {
            self.strikes = 0;
            return true;
        }
        self.strikes += 1;
        self.refuse(
            ErrorCode::RateLimited,
            "too many frames per second; slow down",
            id,
        );
        if self.strikes >= self.state.limits().max_msgs_per_sec.max(1) {
            self.outbox.close(CloseRequest::server(
                1008,
                "rate limit exceeded",
                CloseReason::Policy,
            ));
        }
        false
    }

    async fn on_frame(&mut self, frame: ClientFrame<'_>) {
        // The two branches that await are boxed: their state (trace contexts,
        // the decoded frame, broker futures) would otherwise be part of every
        // idle connection's session future. One allocation per publish or
        // subscribe is cheaper than kilobytes per connection.
        match frame {
            ClientFrame::Subscribe { room } => Box::pin(self.subscribe(room)).await,
            ClientFrame::Unsubscribe { room } => self.unsubscribe(room),
            ClientFrame::Publish(publish) => Box::pin(self.publish(publish)).await,
            ClientFrame::Ping { id } => self.reply(&Reply::Pong { id: id.as_deref() }),
        }
    }

    async fn subscribe(&mut self, room: RoomName) {
        if self.rooms.contains(&room) {
            // Idempotent: the client is subscribed, and hears so again.
            self.reply(&Reply::Subscribed {
                room: room.as_str(),
            });
            return;
        }
        if !self.admitted.identity.permissions.may_subscribe(&room) {
            let message = format!("your token does not allow subscribing to {room}");
            self.refuse(ErrorCode::Forbidden, &message, None);
            return;
        }
        let max_rooms = self.state.limits().max_rooms_per_connection;
        if self.rooms.len() >= max_rooms {
            let message = format!("a connection may be in at most {max_rooms} rooms");
            self.refuse(ErrorCode::TooManyRooms, &message, None);
            return;
        }
        let key = self.key(room.clone());
        if let Err(e) = self.state.broker().acquire(&key).await {
            // The broker logs the failure, rate-limited: a client must not
            // be able to write a log line per frame.
            self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
            return;
        }
        let confirmation = Reply::Subscribed {
            room: room.as_str(),
        };
        let frame = confirmation.encode();
        let subscriber = Subscriber {
            conn: self.conn,
            outbox: self.outbox.clone(),
        };
        let mut pushed = Pushed::Queued;
        self.state.hub().join(&key, subscriber, || {
            pushed = self.outbox.push(Outbound {
                frame,
                frame_type: confirmation.frame_type(),
                published_at: None,
            });
        });
        self.account(pushed);
        self.rooms.insert(room);
    }

    fn unsubscribe(&mut self, room: RoomName) {
        if !self.rooms.remove(&room) {
            let message = format!("not subscribed to room {room}");
            self.refuse(ErrorCode::NotSubscribed, &message, None);
            return;
        }
        let confirmation = Reply::Unsubscribed {
            room: room.as_str(),
        };
        let frame = confirmation.encode();
        let key = self.key(room.clone());
        let mut pushed = Pushed::Queued;
        self.state.hub().leave(&key, self.conn, || {
            pushed = self.outbox.push(Outbound {
                frame,
                frame_type: confirmation.frame_type(),
                published_at: None,
            });
        });
        self.account(pushed);
        self.state.broker().release(&key);
    }

    async fn publish(&mut self, publish: Publish<'_>) {
        if !self
            .admitted
            .identity
            .permissions
            .may_publish(&publish.room)
        {
            let message = format!("your token does not allow publishing to {}", publish.room);
            self.refuse(ErrorCode::Forbidden, &message, publish.id.as_deref());
            return;
        }
        let key = self.key(publish.room.clone());
        let parent = propagation::extract_frame(
            publish.traceparent.as_deref(),
            publish.tracestate.as_deref(),
        );
        let span = self
            .state
            .tracer()
            .publish(&parent, Origin::WebSocket(self.conn), &key);
        let cx = span.context().clone();
        let result = self
            .state
            .publish(&cx, &key, publish.data)
            .with_context(cx.clone())
            .await;
        match result {
            Ok(message_id) => {
                span.record_message_id(&message_id);
                if let Some(id) = publish.id.as_deref() {
                    self.reply(&Reply::Ack {
                        id,
                        room: publish.room.as_str(),
                    });
                }
            }
            Err(e) => {
                let code = ErrorCode::BrokerUnavailable;
                span.record_error(code.as_str(), &e.to_string());
                self.refuse(code, &e.to_string(), publish.id.as_deref());
            }
        }
        span.end();
    }

    /// Queues an error frame and counts the error.
    pub(super) fn refuse(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        self.state.metrics().error(code.into());
        self.reply(&Reply::Error { code, message, id });
    }

    fn reply(&self, reply: &Reply<'_>) {
        let pushed = self.outbox.push(Outbound {
            frame: reply.encode(),
            frame_type: reply.frame_type(),
            published_at: None,
        });
        self.account(pushed);
    }

    /// Counts a frame that could not be queued for this connection.
    fn account(&self, pushed: Pushed) {
        let metrics = self.state.metrics();
        match pushed {
            Pushed::Queued => {}
            Pushed::Dropped => metrics.undelivered(1, 0, 0),
            Pushed::Kicked => metrics.undelivered(0, 1, 0),
            Pushed::Closed => metrics.undelivered(0, 0, 1),
        }
    }
}

/// The client's `id` of a decoded frame, for replies that must echo it.
fn frame_id<'a>(frame: &'a ClientFrame<'_>) -> Option<&'a str> {
    match frame {
        ClientFrame::Publish(p) => p.id.as_deref(),
        ClientFrame::Ping { id } => id.as_deref(),
        ClientFrame::Subscribe { .. } | ClientFrame::Unsubscribe { .. } => None,
    }
}
