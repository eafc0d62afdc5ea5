/** The client's options, events and states, and their defaults. */
import type { WsgateError } from "./errors.js";
import type { TokenSource } from "./token.js";
import type { WebSocketConstructor } from "./transport.js";

export type ConnectionState = "connecting" | "connected" | "disconnected" | "closed";

export interface ClientOptions {
  /** A token, or a function called on every (re)connect and before each refresh. */
  token?: TokenSource;
  /** Reconnect backoff: the first delay, and the cap it doubles up to (full jitter between them). Default 500 and 30,000. */
  minReconnectDelayMs?: number;
  maxReconnectDelayMs?: number;
  /** A sent publish without an `ack` this long after rejects with `publish_timeout`. Default 10,000. */
  publishTimeoutMs?: number;
  /** Publishes that may wait while disconnected; more reject with `queue_full`. Default 1,000. */
  maxQueuedPublishes?: number;
  /** How often to send a `ping` frame, and how long the gateway may stay silent after one before the connection counts as dead. Default 20,000 and 10,000; 0 turns pings off. */
  pingIntervalMs?: number;
  pongTimeoutMs?: number;
  /** Refresh the token this long before its `exp` (or half-way through, for shorter tokens). Default 60,000. */
  refreshMarginMs?: number;
  /** A connection attempt that is not open after this long is given up and retried. Default 10,000. */
  connectTimeoutMs?: number;
  /** The gateway's `--max-message-bytes`: a publish frame over it rejects at once with `too_large`. Default 65,536. */
  maxMessageBytes?: number;
  /** Make spans when `@opentelemetry/api` is installed and a provider registered. Default true. */
  tracing?: boolean;
  /** The WebSocket implementation; default `ws` in Node, the global one elsewhere. */
  WebSocket?: WebSocketConstructor;
}

export type ClientEvents = {
  state: ConnectionState;
  /** What the application should know but no promise reports: a refused upgrade, an unmatched error frame. */
  error: WsgateError;
};

export interface PublishOptions {
  /** Your own id for the publish (at most 128 bytes); by default the client makes one. Reuse it to retry. */
  id?: string;
}

export const DEFAULTS = {
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 30_000,
  publishTimeoutMs: 10_000,
  maxQueuedPublishes: 1_000,
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  refreshMarginMs: 60_000,
  connectTimeoutMs: 10_000,
  maxMessageBytes: 65_536,
};

/** `options` without its undefined values, to spread over the defaults. */
export function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}
