//! What a session does with each client frame.
//!
//! Every frame is rate-limited (`rate`), decoded, checked against the
//! connection's identity (its tenant and room permissions) and the node's
//! limits, handled, and answered: a reply, or an error frame with a stable
//! code. All of it is counted. Error messages quote at most
//! [`MAX_QUOTED`](wsgate_protocol::MAX_QUOTED) bytes of what the client sent.

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::rate::Verdict;
use super::recover::Joined;
use super::session::Session;
use crate::labels::RecoveryResult;
use crate::outbox::{Outbound, Pushed};
use crate::publish::{ClientId, PublishError};
use crate::telemetry::{Publisher, propagation};
use wsgate_protocol::room::{RoomKey, RoomName};
use wsgate_protocol::{self as protocol, ClientFrame, ErrorCode, Publish, Reply, Since, quoted};

impl Session {
    /// The key of one of this connection's rooms: rooms live within its tenant.
    pub(super) fn key(&self, room: RoomName) -> RoomKey {
        RoomKey::new(self.admitted.identity.tenant.clone(), room)
    }

    /// Decodes and handles one text frame, unless the rate limit refused it
    /// (then it is only answered, at most once a second, and counted).
    pub(super) async fn on_text(&mut self, text: Utf8Bytes, verdict: Verdict) {
        let started = std::time::Instant::now();
        let frame_type = match protocol::decode(text.as_str()) {
            Ok(frame) => {
                let frame_type = frame.frame_type();
                if verdict == Verdict::Allowed {
                    self.on_frame(frame).await;
                } else {
                    self.rate_limited(verdict, frame_id(&frame));
                }
                frame_type
            }
            Err(e) => {
                if verdict == Verdict::Allowed {
                    self.refuse(e.code, &e.message, e.id.as_deref());
                } else {
                    self.rate_limited(verdict, e.id.as_deref());
                }
                e.frame_type
            }
        };
        self.state
            .metrics()
            .message_received(frame_type, started.elapsed());
    }

    async fn on_frame(&mut self, frame: ClientFrame<'_>) {
        // The two branches that await are boxed: their state (trace contexts,
        // the decoded frame, broker futures) would otherwise be part of every
        // idle connection's session future. One allocation per publish or
        // subscribe is cheaper than kilobytes per connection.
        match frame {
            ClientFrame::Subscribe { room, since } => Box::pin(self.subscribe(room, since)).await,
            ClientFrame::Unsubscribe { room } => self.unsubscribe(room),
            ClientFrame::Publish(publish) => Box::pin(self.publish(publish)).await,
            ClientFrame::Ping { id } => self.reply(&Reply::Pong { id: id.as_deref() }),
            ClientFrame::Refresh { token } => self.refresh(&token),
            ClientFrame::History { room, limit, since } => {
                Box::pin(self.history(room, limit, since)).await;
            }
        }
    }

    async fn subscribe(&mut self, room: RoomName, since: Option<Since<'_>>) {
        if self.rooms.contains(&room) {
            // Idempotent: the client is subscribed, and hears so again (with
            // the room's position, when it has history).
            let position = self.position_of(&self.key(room.clone())).await;
            self.reply(&Reply::Subscribed {
                room: room.as_str(),
                offset: position.as_ref().map(|p| p.0),
                epoch: position.as_ref().map(|p| p.1.as_str()),
                recovered: None,
            });
            return;
        }
        if !self.admitted.identity.permissions.may_subscribe(&room) {
            let message = format!(
                "your token does not allow subscribing to {}",
                quoted(room.as_str())
            );
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
        // Checked before the broker is asked, so a node at its room limit does
        // no NATS work for a room it would refuse; the hub checks again,
        // exactly, when the room is created.
        let hub = self.state.hub();
        if !hub.has_room(&key) && hub.room_count() >= self.state.limits().max_rooms {
            self.refuse_room_limit();
            return;
        }
        if let Err(e) = self.state.broker().acquire(&key).await {
            // The broker logs the failure, rate-limited: a client must not
            // be able to write a log line per frame.
            self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
            return;
        }
        let state = self.state.clone();
        let joined = if let Some(history) = state.history() {
            self.join_with_history(history, &key, &room, since).await
        } else if let Some(nats) = state.broker().stream_history() {
            self.join_with_stream(nats, &key, &room, since).await
        } else {
            // Without history nothing can be resumed: a client that asked is
            // told so.
            let recovered = since.map(|_| false);
            if recovered.is_some() {
                self.state
                    .history_metrics()
                    .recovery(RecoveryResult::NotRecovered, 0);
            }
            let confirmation = Reply::Subscribed {
                room: room.as_str(),
                offset: None,
                epoch: None,
                recovered,
            };
            let frame = Outbound {
                frame: confirmation.encode(),
                frame_type: confirmation.frame_type(),
                published_at: None,
            };
            self.join_now(&key, vec![frame])
        };
        match joined {
            Joined::Yes => {
                self.rooms.insert(room);
            }
            // Another subscribe took the last room in between.
            Joined::RoomLimit => {
                self.state.broker().release(&key);
                self.refuse_room_limit();
            }
            Joined::Answered => self.state.broker().release(&key),
        }
    }

    fn refuse_room_limit(&self) {
        let message = "this server is at its limit of rooms; try again later";
        self.refuse(ErrorCode::TooManyRooms, message, None);
    }

    fn unsubscribe(&mut self, room: RoomName) {
        if !self.rooms.remove(&room) {
            let message = format!("not subscribed to room {}", quoted(room.as_str()));
            self.refuse(ErrorCode::NotSubscribed, &message, None);
            return;
        }
        self.leave(room);
    }

    /// Leaves a room this connection was in (already taken out of `rooms`),
    /// confirming with `unsubscribed`.
    fn leave(&mut self, room: RoomName) {
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
            let message = format!(
                "your token does not allow publishing to {}",
                quoted(publish.room.as_str())
            );
            self.refuse(ErrorCode::Forbidden, &message, publish.id.as_deref());
            return;
        }
        let key = self.key(publish.room.clone());
        let parent = propagation::extract_frame(
            publish.traceparent.as_deref(),
            publish.tracestate.as_deref(),
        );
        let publisher = Publisher::WebSocket(self.conn);
        // A user's ids are its own: the scope keeps them from matching another
        // user's (only a node with history remembers them).
        let client_id = publish.id.as_deref().map(|id| ClientId {
            kind: "ws:",
            user: self.admitted.identity.user.as_deref().unwrap_or(""),
            id,
        });
        let result = self
            .state
            .publish(&parent, publisher, &key, publish.data, client_id)
            .await;
        match result {
            Ok(published) => {
                if let Some(id) = publish.id.as_deref() {
                    self.reply(&Reply::Ack {
                        id,
                        room: publish.room.as_str(),
                        offset: published.offset,
                    });
                }
            }
            Err(e @ PublishError::Broker(_)) => {
                self.refuse(
                    ErrorCode::BrokerUnavailable,
                    &e.to_string(),
                    publish.id.as_deref(),
                );
            }
            Err(e @ PublishError::IdConflict { .. }) => {
                self.refuse(ErrorCode::IdConflict, &e.to_string(), publish.id.as_deref());
            }
        }
    }

    /// A `history` request: authorised exactly like a subscribe to the room.
    async fn history(&mut self, room: RoomName, limit: Option<u32>, since: Option<Since<'_>>) {
        if !self.admitted.identity.permissions.may_subscribe(&room) {
            let message = format!(
                "your token does not allow reading {}",
                quoted(room.as_str())
            );
            self.refuse(ErrorCode::Forbidden, &message, None);
            return;
        }
        let state = self.state.clone();
        if let Some(nats) = state.broker().stream_history() {
            if let Err(e) = self.read_stream_history(nats, &room, limit, since).await {
                self.refuse(ErrorCode::BrokerUnavailable, &e.to_string(), None);
            }
            return;
        }
        self.read_history(&room, limit, since).await;
    }

    /// A new token for this connection: the same user and tenant, a later
    /// expiry, and perhaps other room permissions. Subscriptions the new token
    /// no longer allows end, each with `unsubscribed` then `forbidden`.
    fn refresh(&mut self, token: &str) {
        let Some(verifier) = self.state.admission().verifier() else {
            let message = "this gateway does not use tokens; there is nothing to refresh";
            self.refuse(ErrorCode::InvalidMessage, message, None);
            return;
        };
        let identity = match verifier.verify(token) {
            Ok(identity) => identity,
            Err(e) => {
                self.refuse(ErrorCode::Unauthorized, &e.to_string(), None);
                return;
            }
        };
        if !self.admitted.identity.same_subject(&identity) {
            let message = "a refresh token must name the connection's own user and tenant";
            self.refuse(ErrorCode::Forbidden, message, None);
            return;
        }
        let exp = identity.expires.unwrap_or_default();
        let revoked: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|room| !identity.permissions.may_subscribe(room))
            .cloned()
            .collect();
        self.admitted.identity = identity;
        self.rearm = true;
        self.reply(&Reply::Refreshed { exp });
        for room in revoked {
            self.rooms.remove(&room);
            let message = format!(
                "your refreshed token no longer allows room {}",
                quoted(room.as_str())
            );
            self.leave(room);
            self.refuse(ErrorCode::Forbidden, &message, None);
        }
    }

    /// Queues an error frame and counts the error.
    pub(super) fn refuse(&self, code: ErrorCode, message: &str, id: Option<&str>) {
        self.state.metrics().error(code.into());
        self.reply(&Reply::Error { code, message, id });
    }

    pub(super) fn reply(&self, reply: &Reply<'_>) {
        let pushed = self.outbox.push(Outbound {
            frame: reply.encode(),
            frame_type: reply.frame_type(),
            published_at: None,
        });
        self.account(pushed);
    }

    /// Counts a frame that could not be queued for this connection.
    pub(super) fn account(&self, pushed: Pushed) {
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
        ClientFrame::Subscribe { .. }
        | ClientFrame::Unsubscribe { .. }
        | ClientFrame::Refresh { .. }
        | ClientFrame::History { .. } => None,
    }
}
