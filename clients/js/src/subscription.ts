/**
 * Subscriptions: the handle an application holds ({@link Subscription}) and
 * the client's record of each room ({@link Room}): where in the room's history
 * it is, so that a reconnect resumes there and nothing is delivered twice.
 */
import { Emitter } from "./emitter.js";
import { WsgateError } from "./errors.js";

/** A delivered message. */
export interface Message {
  room: string;
  /** Assigned by the gateway: unique across nodes and restarts. */
  id: string;
  data: unknown;
  /** The message's position in its room, when the room keeps history. */
  offset?: number;
  /** The W3C context of the gateway's `process` span for this delivery. */
  traceparent?: string;
}

export type MessageHandler = (message: Message) => void;

export interface SubscribeOptions {
  /**
   * Resume from the last delivered message after a reconnect (the gateway
   * must keep history: `--history-size`). Default false.
   */
  recover?: boolean;
}

/** After each reconnect: `recovered: false` means messages may have been missed; reload. */
export interface Resubscribed {
  recovered: boolean;
}

export type SubscriptionEvents = {
  resubscribed: Resubscribed;
  /** The gateway ended the subscription (e.g. `forbidden` after a token refresh). */
  error: WsgateError;
};

export class Subscription extends Emitter<SubscriptionEvents> {
  /** Resolves on the first `subscribed`; rejects with the gateway's error. */
  readonly ready: Promise<void>;
  private settleReady!: (error?: WsgateError) => void;
  private isReady = false;
  private ended = false;

  /** @internal */
  constructor(
    readonly room: string,
    /** @internal */
    readonly handler: MessageHandler,
    private readonly detach: (subscription: Subscription) => void,
  ) {
    super();
    this.ready = new Promise<void>((resolve, reject) => {
      this.settleReady = (error) => (error ? reject(error) : resolve());
    });
    // An application that never awaits `ready` must not see an unhandled rejection.
    this.ready.catch(() => undefined);
  }

  /** True until `unsubscribe()`, `close()`, or the gateway ends it. */
  get active(): boolean {
    return !this.ended;
  }

  /** Stops delivery; the room is left when its last subscription goes. */
  unsubscribe(): void {
    if (this.ended) return;
    this.end();
    this.detach(this);
  }

  /** @internal */
  markReady(): void {
    if (this.isReady) return;
    this.isReady = true;
    this.settleReady();
  }

  /**
   * @internal Ends it: `ready` rejects if it had not resolved; otherwise
   * `error` is emitted, unless `quietly` (the application closed the client).
   */
  fail(error: WsgateError, quietly: boolean): void {
    if (this.ended) return;
    this.end();
    if (!this.isReady) this.settleReady(error);
    else if (!quietly) this.emit("error", error);
  }

  /** @internal */
  resubscribed(recovered: boolean): void {
    this.emit("resubscribed", { recovered });
  }

  private end(): void {
    this.ended = true;
  }
}

/** The client's record of one room it is subscribed to. */
export class Room {
  readonly subscriptions = new Set<Subscription>();
  recover = false;
  /** Got a `subscribed` at least once. */
  joined = false;
  /** The room's epoch, and the offset delivered through (or the room's position when joined). */
  epoch: string | undefined;
  offset: number | undefined;
  /** This connection's subscribe asked to resume (`since`). */
  resuming = false;

  constructor(readonly name: string) {}

  /** The `subscribe` frame for (re)joining: with `since` when it can resume. */
  subscribeFrame(): string {
    this.resuming = this.joined && this.recover && this.epoch !== undefined && this.offset !== undefined;
    const frame: Record<string, unknown> = { type: "subscribe", room: this.name };
    if (this.resuming) frame.since = { offset: this.offset, epoch: this.epoch };
    return JSON.stringify(frame);
  }

  /** A `subscribed` answering this connection's subscribe (or a second one during a replay). */
  subscribed(frame: { offset?: number; epoch?: string; recovered?: boolean }, answersSubscribe: boolean): void {
    if (!this.joined) {
      this.joined = true;
      this.epoch = frame.epoch;
      this.offset = frame.offset;
      for (const subscription of this.subscriptions) subscription.markReady();
      return;
    }
    const recovered = answersSubscribe && this.resuming && frame.recovered === true && frame.epoch === this.epoch;
    this.resuming = false;
    if (!recovered) {
      // What follows is live, after the room's current position.
      this.epoch = frame.epoch;
      this.offset = frame.offset;
    }
    for (const subscription of this.subscriptions) subscription.resubscribed(recovered);
  }

  /**
   * Whether to hand `offset` to the application: false for a message it
   * already has (a replay overlapping what was delivered before a drop).
   */
  accept(offset: number | undefined): boolean {
    if (offset === undefined) return true;
    if (this.offset !== undefined && offset <= this.offset) return false;
    this.offset = offset;
    return true;
  }

  fail(error: WsgateError, quietly: boolean): void {
    for (const subscription of [...this.subscriptions]) subscription.fail(error, quietly);
    this.subscriptions.clear();
  }
}
