/**
 * Every failure the client reports is a {@link WsgateError} with a stable
 * `code`: the gateway's own error codes (docs/protocol.md, "Error codes"), and
 * the client's, listed in {@link ClientErrorCode}.
 */

/** The gateway's error codes, as its `error` frames carry them. */
export type ServerErrorCode =
  | "invalid_message"
  | "unknown_type"
  | "invalid_room"
  | "not_subscribed"
  | "unsupported_binary"
  | "broker_unavailable"
  | "forbidden"
  | "unauthorized"
  | "rate_limited"
  | "too_many_rooms"
  | "id_conflict"
  | "internal";

/** The client's own codes. */
export type ClientErrorCode =
  /** `publish` got no `ack` within `publishTimeoutMs` of being sent. */
  | "publish_timeout"
  /** `publish` while disconnected, with `maxQueuedPublishes` already waiting. */
  | "queue_full"
  /** The client was closed (by `close()`, or for good after a refused upgrade). */
  | "closed"
  /** Node only: the gateway refused the upgrade with HTTP 401 (a bad or expired token). */
  | "http_401"
  /** Node only: the gateway refused the upgrade with HTTP 403 (an origin or policy refusal). */
  | "http_403"
  /** The `token` function threw or rejected. */
  | "token_failed"
  /** A connection attempt could not even start (no WebSocket implementation, a token that is not a valid subprotocol). */
  | "connect_failed"
  /** A publish frame over `maxMessageBytes`, or one the gateway closed the connection over (1009). */
  | "too_large";

export type WsgateErrorCode = ServerErrorCode | ClientErrorCode;

export class WsgateError extends Error {
  /** Stable: branch on it. */
  readonly code: WsgateErrorCode | (string & {});

  constructor(code: WsgateErrorCode | (string & {}), message: string) {
    super(message);
    this.name = "WsgateError";
    this.code = code;
  }
}
