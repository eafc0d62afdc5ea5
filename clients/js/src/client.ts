/**
 * `WsgateClient`: one WebSocket to a wsgate gateway, kept open. It reconnects
 * after any drop with backoff and full jitter, re-subscribes every room
 * (resuming where it can), resends every publish not yet acknowledged, answers
 * the gateway's heartbeat, and refreshes the token before it expires.
 *
 * Replies are matched to requests by `id` where the gateway echoes one (the
 * `ack` and `error` of a publish) and otherwise by order (`requests.ts`).
 * Frames the gateway's rate limit dropped are found with a barrier and sent
 * again (`ratelimit.ts`); the token is refreshed by `refresh.ts`.
 */
import { Connection, type ConnectionOptions } from "./connection.js";
import { Emitter, reportListenerError } from "./emitter.js";
import { WsgateError } from "./errors.js";
import { type PublishResult, Publishes } from "./publishes.js";
import { RateLimit } from "./ratelimit.js";
import { type Request, Requests } from "./requests.js";
import { type Message, type MessageHandler, Room, type SubscribeOptions, Subscription } from "./subscription.js";
import { type Frame, type MessageFrame } from "./frames.js";
import { randomId, utf8Length } from "./ids.js";
import { type ClientEvents, type ClientOptions, type ConnectionState, DEFAULTS, definedOnly, type PublishOptions } from "./options.js";
import { TokenRefresh } from "./refresh.js";
import { tokenExpiry } from "./token.js";
import { loadOtel, Tracing } from "./tracing.js";

/** The gateway's limit on an `id`, in UTF-8 bytes. */
const MAX_ID_BYTES = 128;

export class WsgateClient extends Emitter<ClientEvents> {
  private currentState: ConnectionState = "connecting";
  private readonly connection: Connection;
  private readonly rooms = new Map<string, Room>();
  private readonly publishes: Publishes;
  private readonly requests = new Requests();
  /** Frames sent so far: each frame's sequence number. */
  private seq = 0;
  private readonly rateLimit: RateLimit;
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private tracing: Tracing | undefined;
  /** Whether `tracing` is final: the API has loaded, or is known absent or unwanted. */
  private tracingSettled = false;
  private readonly refresh: TokenRefresh;
  private readonly idPrefix = randomId();
  private nextId = 1;

  constructor(url: string, options: ClientOptions = {}) {
    super();
    const settings = { ...DEFAULTS, ...definedOnly(options) };
    this.publishes = new Publishes(settings.publishTimeoutMs, settings.maxQueuedPublishes, settings.maxMessageBytes);
    this.refresh = new TokenRefresh(
      {
        canRefresh: () => this.connection.canRefresh,
        freshToken: () => this.connection.freshToken(),
        sendRefresh: (token) => this.sendRefresh(token),
        reconnectNow: () => this.connection.reconnectNow(),
        warn: (error) => this.emit("error", error),
      },
      settings.refreshMarginMs,
    );
    this.rateLimit = new RateLimit({
      isOpen: () => this.connection.isOpen,
      transmit: (text) => this.transmit(text),
      unansweredBefore: (seq) => [
        ...this.requests.unansweredBefore(seq).map((request) => () => this.resend(request)),
        ...this.publishes.unansweredBefore(seq).map((id) => () => this.sendPublish(id)),
      ],
    });
    const connectionOptions: ConnectionOptions = {
      url,
      token: options.token,
      WebSocket: options.WebSocket,
      minReconnectDelayMs: settings.minReconnectDelayMs,
      maxReconnectDelayMs: settings.maxReconnectDelayMs,
      pingIntervalMs: settings.pingIntervalMs,
      pongTimeoutMs: settings.pongTimeoutMs,
      connectTimeoutMs: settings.connectTimeoutMs,
    };
    this.connection = new Connection(connectionOptions, {
      connecting: () => this.setState("connecting"),
      opened: (token) => this.opened(token),
      frame: (frame) => this.received(frame as Frame),
      dropped: (code) => this.dropped(code),
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
      subscription.fail(new WsgateError("closed", "the client is closed"), false);
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
    if (utf8Length(id) > MAX_ID_BYTES) {
      return Promise.reject(new WsgateError("invalid_message", `a publish id is at most ${MAX_ID_BYTES} bytes`));
    }
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
      try {
        return { frame: JSON.stringify(frame), span };
      } catch (error) {
        span?.end({ code: "invalid_message", message: String(error) });
        throw error;
      }
    };
    if (!this.tracingSettled) {
      // The frame is built at the first send; data that is not JSON is refused now, as it is below.
      try {
        JSON.stringify(data);
      } catch (error) {
        return Promise.reject(new WsgateError("invalid_message", `data is not JSON: ${String(error)}`));
      }
    }
    const connected = this.connection.isOpen;
    // Until the OpenTelemetry API has loaded (the client has not connected yet), the span waits too.
    // Bounded while it cannot be sent: disconnected, or held back by the gateway's rate limit.
    const result = this.publishes.add(id, build, this.tracingSettled, !connected || this.rateLimit.holding);
    if (connected) this.rateLimit.send(() => this.sendPublish(id));
    return result;
  }

  private sendPublish(id: string): void {
    if (this.connection.isOpen) this.publishes.resend(id, (text) => this.transmit(text));
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
    this.requests.clear();
    // Everything is sent afresh on a new connection.
    this.rateLimit.reset(this.seq);
    this.setState("connected");
    for (const room of this.rooms.values()) this.sendSubscribe(room);
    // After the rooms, and at the learned pace when the gateway limits the rate.
    for (const id of this.publishes.ids()) this.rateLimit.send(() => this.sendPublish(id));
    const exp = token === undefined ? undefined : tokenExpiry(token);
    if (exp !== undefined) this.refresh.schedule(exp);
  }

  private dropped(code: number | undefined): void {
    if (code === 1009) {
      // The gateway refused a frame as too big: the largest publish in flight, which must not be sent again.
      const id = this.publishes.largestSent();
      if (id !== undefined) this.publishes.settle(id, new WsgateError("too_large", "the gateway closed the connection over a frame too large (1009)"));
    }
    this.publishes.disconnected();
    this.requests.clear();
    this.clearTimers();
    this.setState("disconnected");
  }

  private clearTimers(): void {
    this.refresh.stop();
    this.rateLimit.stop();
    for (const timer of this.retryTimers) clearTimeout(timer);
    this.retryTimers.clear();
  }

  /** Sends a frame on the open connection; returns its sequence number. */
  private transmit(text: string): number {
    const seq = ++this.seq;
    this.connection.send(text);
    this.rateLimit.sent(seq);
    return seq;
  }

  /** The connection gave up for good (Node: the upgrade was refused with 401 or 403). */
  private failed(error: WsgateError): void {
    this.emit("error", error);
    this.shutDown(error);
  }

  private shutDown(error: WsgateError): void {
    const quietly = this.currentState !== "closed" && error.code === "closed";
    this.setState("closed");
    this.clearTimers();
    this.connection.stop();
    this.publishes.rejectAll(error);
    // On close(), subscriptions just end; after a refused upgrade each hears why.
    for (const room of this.rooms.values()) room.fail(error, quietly);
    this.rooms.clear();
  }

  private sendSubscribe(room: Room): void {
    if (!this.connection.isOpen) return;
    this.rateLimit.send(() => {
      if (!this.connection.isOpen || !this.current(room)) return;
      const seq = this.transmit(room.subscribeFrame());
      this.requests.push({ kind: "subscribe", room, seq });
    });
  }

  private detach(subscription: Subscription): void {
    const room = this.rooms.get(subscription.room);
    if (!room || !room.subscriptions.delete(subscription) || room.subscriptions.size > 0) return;
    this.rooms.delete(room.name);
    this.sendUnsubscribe(room);
  }

  private sendUnsubscribe(room: Room): void {
    if (!this.connection.isOpen) return;
    this.rateLimit.send(() => {
      if (!this.connection.isOpen || this.rooms.has(room.name)) return;
      const seq = this.transmit(JSON.stringify({ type: "unsubscribe", room: room.name }));
      this.requests.push({ kind: "unsubscribe", room, seq });
    });
  }

  /** Whether `room` is still the record of its name (not left, nor replaced by a new subscribe). */
  private current(room: Room): boolean {
    return this.rooms.get(room.name) === room;
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
        if (name === undefined) return;
        const request = this.requests.take((r) => r.kind === "subscribe" && r.room.name === name);
        if (request?.kind === "subscribe") {
          // The answer to a record since left or replaced is not the current record's.
          if (this.current(request.room)) request.room.subscribed(frame, true);
        } else {
          // A second `subscribed` during a replay: messages were trimmed (docs/protocol.md).
          this.rooms.get(name)?.subscribed(frame, false);
        }
        return;
      }
      case "unsubscribed": {
        const name = frame.room;
        if (name === undefined) return;
        if (this.requests.take((r) => r.kind === "unsubscribe" && r.room.name === name)) return;
        // Not asked for: the gateway left the room for us; the error that follows says why.
        const room = this.rooms.get(name);
        if (room) this.requests.pushFront({ kind: "dropped", room, seq: Number.POSITIVE_INFINITY });
        return;
      }
      case "refreshed": {
        const request = this.requests.take((r) => r.kind === "refresh");
        if (request?.kind === "refresh") this.connection.token = request.token;
        if (typeof frame.exp === "number") this.refresh.schedule(frame.exp);
        return;
      }
      case "error":
        return this.errorFrame(frame);
      case "pong":
        if (typeof frame.id === "string") this.rateLimit.pong(frame.id);
        return;
      default:
        // Frame types newer than this client: any frame is a sign of life.
        return;
    }
  }

  private deliver(frame: MessageFrame): void {
    const room = this.rooms.get(frame.room);
    // Before its `subscribed`, a record's messages are an earlier subscription's (left, then joined again).
    if (!room || !room.joined || !room.accept(frame.offset)) return;
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
    if (code === "rate_limited") {
      // The frame was not handled: not an answer in order, and not a failure of
      // a publish. What was dropped is found and sent again (`ratelimit.ts`).
      this.emit("error", error);
      this.rateLimit.limited();
      return;
    }
    if (frame.id !== undefined) {
      if (!this.publishes.settle(frame.id, error)) this.emit("error", error);
      return;
    }
    // Which request it answers is unknown until the round's barrier; the
    // request is sent again then, and answered again. The exception: the
    // error right after an unasked `unsubscribed` says why, whatever was dropped.
    if (this.rateLimit.uncertain && this.requests.peek()?.kind !== "dropped") {
      this.rateLimit.unmatchedError();
      return;
    }
    const request = this.requests.shift();
    if (!request) {
      this.emit("error", error);
      return;
    }
    switch (request.kind) {
      case "subscribe":
      case "dropped":
        if (this.current(request.room)) this.subscriptionRefused(request.room, error);
        return;
      case "unsubscribe":
        return; // `not_subscribed`: already out.
      case "refresh":
        return this.refresh.refused(error);
    }
  }

  private resend(request: Request): void {
    switch (request.kind) {
      case "subscribe":
        if (this.current(request.room)) this.sendSubscribe(request.room);
        return;
      case "unsubscribe":
        if (!this.rooms.has(request.room.name)) this.sendUnsubscribe(request.room);
        return;
      case "refresh":
        void this.refresh.now();
        return;
      case "dropped":
        return;
    }
  }

  /** A (re)subscribe was refused, or the gateway left the room for us. */
  private subscriptionRefused(room: Room, error: WsgateError): void {
    const transient = error.code === "broker_unavailable" || error.code === "internal";
    if (room.joined && transient) {
      // Keep the subscription: try again shortly, resuming where it was.
      const timer = setTimeout(() => {
        this.retryTimers.delete(timer);
        if (this.current(room)) this.sendSubscribe(room);
      }, 1_000);
      this.retryTimers.add(timer);
      this.emit("error", error);
      return;
    }
    this.rooms.delete(room.name);
    room.fail(error, false);
  }

  private sendRefresh(token: string): void {
    this.rateLimit.send(() => {
      if (!this.connection.isOpen) return;
      const seq = this.transmit(JSON.stringify({ type: "refresh", token }));
      this.requests.push({ kind: "refresh", token, seq });
    });
  }
}
