/**
 * `WsgateClient`: one WebSocket to a wsgate gateway, kept open. It reconnects
 * after any drop with backoff and full jitter, re-subscribes every room
 * (resuming where it can), resends every publish not yet acknowledged, answers
 * the gateway's heartbeat, and refreshes the token before it expires.
 *
 * Replies are matched to requests by `id` where the gateway echoes one (the
 * `ack` and `error` of a publish) and otherwise by order: the gateway handles
 * a connection's frames one at a time and answers them in order, so an error
 * without an `id` answers the oldest request still waiting (see `Control`).
 */
import { Connection, type ConnectionOptions } from "./connection.js";
import { Emitter, reportListenerError } from "./emitter.js";
import { WsgateError } from "./errors.js";
import { type PublishResult, Publishes } from "./publishes.js";
import { type Message, type MessageHandler, Room, type SubscribeOptions, Subscription } from "./subscription.js";
import { refreshDelay, type TokenSource, tokenExpiry } from "./token.js";
import { loadOtel, Tracing } from "./tracing.js";
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
  /** Make spans when `@opentelemetry/api` is installed and a provider registered. Default true. */
  tracing?: boolean;
  /** The WebSocket implementation; default the global one, else the `ws` package. */
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

/** A request whose reply has no `id`: matched by order (see the module comment). */
type Control =
  | { kind: "subscribe" | "unsubscribe"; room: string }
  | { kind: "refresh"; token: string }
  /** The gateway unsubscribed us itself; the error frame that follows says why. */
  | { kind: "dropped"; room: string };

const DEFAULTS = {
  minReconnectDelayMs: 500,
  maxReconnectDelayMs: 30_000,
  publishTimeoutMs: 10_000,
  maxQueuedPublishes: 1_000,
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  refreshMarginMs: 60_000,
};

export class WsgateClient extends Emitter<ClientEvents> {
  private currentState: ConnectionState = "connecting";
  private readonly connection: Connection;
  private readonly rooms = new Map<string, Room>();
  private readonly publishes: Publishes;
  private controls: Control[] = [];
  private tracing: Tracing | undefined;
  /** Whether `tracing` is final: the API has loaded, or is known absent or unwanted. */
  private tracingSettled = false;
  private refreshTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly idPrefix = randomId();
  private nextId = 1;
  private readonly refreshMarginMs: number;

  constructor(url: string, options: ClientOptions = {}) {
    super();
    const settings = { ...DEFAULTS, ...definedOnly(options) };
    this.publishes = new Publishes(settings.publishTimeoutMs, settings.maxQueuedPublishes);
    this.refreshMarginMs = settings.refreshMarginMs;
    const connectionOptions: ConnectionOptions = {
      url,
      token: options.token,
      WebSocket: options.WebSocket,
      minReconnectDelayMs: settings.minReconnectDelayMs,
      maxReconnectDelayMs: settings.maxReconnectDelayMs,
      pingIntervalMs: settings.pingIntervalMs,
      pongTimeoutMs: settings.pongTimeoutMs,
    };
    this.connection = new Connection(connectionOptions, {
      connecting: () => this.setState("connecting"),
      opened: (token) => this.opened(token),
      frame: (frame) => this.received(frame as Frame),
      dropped: () => this.dropped(),
      failed: (error) => this.failed(error),
      warn: (error) => this.emit("error", error),
    });
    const start = () => this.connection.start();
    if (options.tracing === false) {
      this.tracingSettled = true;
      start();
    } else {
      // Connect once the API is loaded (or known absent), so that publishes
      // made while connecting already have their spans.
      void loadOtel().then((api) => {
        if (api) this.tracing = new Tracing(api);
        this.tracingSettled = true;
        if (this.currentState !== "closed") start();
      });
    }
  }

  get state(): ConnectionState {
    return this.currentState;
  }

  /** Delivers the room's messages to `handler` until `unsubscribe()`. */
  subscribe(room: string, handler: MessageHandler, options: SubscribeOptions = {}): Subscription {
    const subscription = new Subscription(room, handler, (s) => this.detach(s));
    if (this.currentState === "closed") {
      subscription.fail(new WsgateError("closed", "the client is closed"));
      return subscription;
    }
    let record = this.rooms.get(room);
    if (!record) {
      record = new Room(room);
      this.rooms.set(room, record);
      record.subscriptions.add(subscription);
      record.recover = options.recover === true;
      this.sendSubscribe(record);
      return subscription;
    }
    record.recover ||= options.recover === true;
    record.subscriptions.add(subscription);
    if (record.joined) subscription.markReady();
    return subscription;
  }

  /**
   * Publishes `data` to `room`. Resolves on the gateway's `ack` (with the
   * message's offset when the room keeps history); rejects with a
   * {@link WsgateError}. While disconnected the publish waits (at most
   * `maxQueuedPublishes` do) and is sent after the reconnect.
   */
  publish(room: string, data: unknown, options: PublishOptions = {}): Promise<PublishResult> {
    if (this.currentState === "closed") {
      return Promise.reject(new WsgateError("closed", "the client is closed"));
    }
    const id = options.id ?? `${this.idPrefix}-${this.nextId++}`;
    if (this.publishes.has(id)) {
      return Promise.reject(new WsgateError("invalid_message", `publish ${id} is already waiting for its ack`));
    }
    const build = () => {
      const span = this.tracing?.send(room, id);
      const frame: Record<string, unknown> = { type: "publish", room, data, id };
      if (span) {
        frame.traceparent = span.traceparent;
        if (span.tracestate) frame.tracestate = span.tracestate;
      }
      return { frame: JSON.stringify(frame), span };
    };
    const send = this.connection.isOpen ? (text: string) => this.connection.send(text) : undefined;
    // Until the OpenTelemetry API has loaded (the client has not connected yet), the span waits too.
    return this.publishes.add(id, build, this.tracingSettled, send);
  }

  /** Closes the connection for good: waiting publishes reject with `closed`. */
  async close(): Promise<void> {
    if (this.currentState === "closed") return this.connection.closed;
    this.shutDown(new WsgateError("closed", "the client is closed"));
    return this.connection.closed;
  }

  private setState(state: ConnectionState): void {
    if (this.currentState === state || this.currentState === "closed") return;
    this.currentState = state;
    this.emit("state", state);
  }

  private opened(token: string | undefined): void {
    this.controls = [];
    this.setState("connected");
    for (const room of this.rooms.values()) this.sendSubscribe(room);
    this.publishes.sendAll((text) => this.connection.send(text));
    const exp = token === undefined ? undefined : tokenExpiry(token);
    if (exp !== undefined) this.scheduleRefresh(exp);
  }

  private dropped(): void {
    this.controls = [];
    clearTimeout(this.refreshTimer);
    this.setState("disconnected");
  }

  /** The connection gave up for good (Node: the upgrade was refused with 401 or 403). */
  private failed(error: WsgateError): void {
    this.emit("error", error);
    this.shutDown(error);
  }

  private shutDown(error: WsgateError): void {
    this.setState("closed");
    clearTimeout(this.refreshTimer);
    this.connection.stop();
    this.publishes.rejectAll(error);
    for (const room of this.rooms.values()) room.fail(error);
    this.rooms.clear();
  }

  private sendSubscribe(room: Room): void {
    if (!this.connection.isOpen) return;
    this.controls.push({ kind: "subscribe", room: room.name });
    this.connection.send(room.subscribeFrame());
  }

  private detach(subscription: Subscription): void {
    const room = this.rooms.get(subscription.room);
    if (!room || !room.subscriptions.delete(subscription) || room.subscriptions.size > 0) return;
    this.rooms.delete(room.name);
    if (!this.connection.isOpen) return;
    this.controls.push({ kind: "unsubscribe", room: room.name });
    this.connection.send(JSON.stringify({ type: "unsubscribe", room: room.name }));
  }

  /** Takes the oldest waiting request matching `match` off the queue. */
  private takeControl(match: (control: Control) => boolean): Control | undefined {
    const index = this.controls.findIndex(match);
    return index < 0 ? undefined : this.controls.splice(index, 1)[0];
  }

  private received(frame: Frame): void {
    switch (frame.type) {
      case "message":
        if (typeof frame.room === "string" && typeof frame.id === "string") this.deliver(frame as MessageFrame);
        return;
      case "ack": {
        const { id, offset } = frame;
        if (typeof id === "string") this.publishes.settle(id, offset === undefined ? { id } : { id, offset });
        return;
      }
      case "subscribed": {
        const name = frame.room;
        const control = this.takeControl((c) => c.kind === "subscribe" && c.room === name);
        if (name !== undefined) this.rooms.get(name)?.subscribed(frame, control !== undefined);
        return;
      }
      case "unsubscribed": {
        const name = frame.room;
        if (name === undefined) return;
        if (this.takeControl((c) => c.kind === "unsubscribe" && c.room === name)) return;
        // Not asked for: the gateway left the room for us; the error that follows says why.
        if (this.rooms.has(name)) this.controls.unshift({ kind: "dropped", room: name });
        return;
      }
      case "refreshed": {
        const control = this.takeControl((c) => c.kind === "refresh");
        if (control?.kind === "refresh") this.connection.token = control.token;
        if (typeof frame.exp === "number") this.scheduleRefresh(frame.exp);
        return;
      }
      case "error":
        return this.errorFrame(frame);
      default:
        // `pong`, and frame types newer than this client: any frame is a sign of life.
        return;
    }
  }

  private deliver(frame: MessageFrame): void {
    const room = this.rooms.get(frame.room);
    if (!room || !room.accept(frame.offset)) return;
    const message: Message = { room: frame.room, id: frame.id, data: frame.data };
    if (frame.offset !== undefined) message.offset = frame.offset;
    if (frame.traceparent !== undefined) message.traceparent = frame.traceparent;
    const handOver = () => {
      for (const subscription of room.subscriptions) {
        try {
          subscription.handler(message);
        } catch (error) {
          reportListenerError(error);
        }
      }
    };
    if (this.tracing) this.tracing.process(frame.room, frame.id, frame.traceparent, frame.offset, handOver);
    else handOver();
  }

  private errorFrame(frame: Frame): void {
    const code = frame.code ?? "internal";
    const error = new WsgateError(code, frame.message ?? code);
    if (frame.id !== undefined) {
      if (!this.publishes.settle(frame.id, error)) this.emit("error", error);
      return;
    }
    // `rate_limited` answers whichever frame was over the limit, not a request in order.
    const control = code === "rate_limited" ? undefined : this.controls.shift();
    if (!control) {
      this.emit("error", error);
      return;
    }
    switch (control.kind) {
      case "subscribe":
      case "dropped":
        return this.subscriptionRefused(control.room, error);
      case "unsubscribe":
        return; // `not_subscribed`: already out.
      case "refresh":
        return this.refreshRefused(error);
    }
  }

  /** A (re)subscribe was refused, or the gateway left the room for us. */
  private subscriptionRefused(name: string, error: WsgateError): void {
    const room = this.rooms.get(name);
    if (!room) return;
    const transient = error.code === "broker_unavailable" || error.code === "internal";
    if (room.joined && transient) {
      // Keep the subscription: try again shortly, resuming where it was.
      setTimeout(() => {
        if (this.rooms.get(name) === room && this.connection.isOpen) this.sendSubscribe(room);
      }, 1_000);
      this.emit("error", error);
      return;
    }
    this.rooms.delete(name);
    room.fail(error);
  }

  private scheduleRefresh(exp: number): void {
    clearTimeout(this.refreshTimer);
    if (!this.connection.canRefresh) return;
    this.refreshTimer = setTimeout(() => void this.refresh(), refreshDelay(exp, Date.now(), this.refreshMarginMs));
  }

  private async refresh(): Promise<void> {
    let token: string | undefined;
    try {
      token = await this.connection.freshToken();
    } catch (error) {
      this.emit("error", new WsgateError("token_failed", `the token function failed: ${String(error)}`));
      return;
    }
    if (token === undefined || !this.connection.isOpen) return;
    this.controls.push({ kind: "refresh", token });
    this.connection.send(JSON.stringify({ type: "refresh", token }));
  }

  private refreshRefused(error: WsgateError): void {
    if (error.code === "unknown_type") {
      // A gateway older than `refresh`: reconnect now, with a fresh token.
      this.connection.reconnectNow();
      return;
    }
    // The gateway keeps the current token; it closes with 4001 at its expiry,
    // and the reconnect asks for a fresh token.
    this.emit("error", error);
  }
}

/** A frame from the gateway: the fields of every type (docs/protocol.md), each optional. */
interface Frame {
  type: string;
  room?: string;
  id?: string;
  data?: unknown;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  traceparent?: string;
  exp?: number;
  code?: string;
  message?: string;
}
interface MessageFrame extends Frame {
  room: string;
  id: string;
}

function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}

/** 48 random bits in hex: the prefix of this client's publish ids. */
function randomId(): string {
  const bytes = new Uint8Array(6);
  const crypto = (globalThis as { crypto?: { getRandomValues(array: Uint8Array): Uint8Array } }).crypto;
  if (crypto) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
