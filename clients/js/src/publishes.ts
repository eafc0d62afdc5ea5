/**
 * Publishes waiting for their `ack`. Every publish has an `id`, so one that
 * was sent but not acknowledged before a drop is sent again, with the same
 * `id`, after the reconnect: the gateway acknowledges a repeated `id` with the
 * first one's offset instead of delivering it twice (within the room's
 * history; without history a repeat may be delivered twice).
 */
import { WsgateError } from "./errors.js";
import type { SendSpan } from "./tracing.js";

/** What `publish` resolves to. */
export interface PublishResult {
  /** The publish's `id`: the client's own, or the one passed in. */
  id: string;
  /** The message's offset in its room, when the room keeps history. */
  offset?: number;
}

/** Builds a publish's frame (and starts its span) when it is first sent. */
export type FrameBuilder = () => { frame: string; span: SendSpan | undefined };

/** Sends a frame and returns its sequence number on the connection. */
export type Send = (frame: string) => number;

interface Pending {
  build: FrameBuilder | undefined;
  frame: string;
  /** The sequence number of its last send on the current connection. */
  seq: number | undefined;
  resolve: (result: PublishResult) => void;
  reject: (error: WsgateError) => void;
  span: SendSpan | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class Publishes {
  /** In the order they were published: the order they are (re)sent in. */
  private readonly pending = new Map<string, Pending>();

  constructor(
    private readonly timeoutMs: number,
    private readonly maxQueued: number,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  has(id: string): boolean {
    return this.pending.has(id);
  }

  /**
   * Registers a publish. When `send` is given (connected) it is sent at once;
   * otherwise it waits, unless `maxQueued` already do. `build` runs at the
   * first send, or at once when it can: a publish that waits for the first
   * connection gets its span when the client knows whether it can trace.
   */
  add(id: string, build: FrameBuilder, buildNow: boolean, send: Send | undefined): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      if (!send && this.pending.size >= this.maxQueued) {
        reject(new WsgateError("queue_full", `${this.maxQueued} publishes already wait for a connection`));
        return;
      }
      const entry: Pending = { build, frame: "", seq: undefined, resolve, reject, span: undefined, timer: undefined };
      if (buildNow) this.built(entry);
      this.pending.set(id, entry);
      if (send) this.sent(id, entry, send);
    });
  }

  /** After a (re)connect: sends every publish not yet acknowledged, in order. */
  sendAll(send: Send): void {
    for (const [id, entry] of this.pending) this.sent(id, entry, send);
  }

  /**
   * The publishes last sent before frame `seq` and still unanswered now that
   * the gateway has answered frame `seq`: the rate limit dropped them, so
   * sending them again cannot deliver one twice. They count as unsent.
   */
  unansweredBefore(seq: number): string[] {
    const ids: string[] = [];
    for (const [id, entry] of this.pending) {
      if (entry.seq !== undefined && entry.seq < seq) {
        entry.seq = undefined;
        ids.push(id);
      }
    }
    return ids;
  }

  /** Sends one again (see `unansweredBefore`), if it still waits. */
  resend(id: string, send: Send): void {
    const entry = this.pending.get(id);
    if (entry && entry.seq === undefined) this.sent(id, entry, send);
  }

  /** The connection dropped: nothing is in flight on it any more. */
  disconnected(): void {
    for (const entry of this.pending.values()) entry.seq = undefined;
  }

  /** The largest publish sent on the connection the gateway just closed with 1009 (too big). */
  largestSent(): string | undefined {
    let largest: [string, number] | undefined;
    for (const [id, entry] of this.pending) {
      if (entry.seq !== undefined && (!largest || entry.frame.length > largest[1])) largest = [id, entry.frame.length];
    }
    return largest?.[0];
  }

  private built(entry: Pending): void {
    if (!entry.build) return;
    ({ frame: entry.frame, span: entry.span } = entry.build());
    entry.build = undefined;
  }

  private sent(id: string, entry: Pending, send: Send): void {
    this.built(entry);
    entry.seq = send(entry.frame);
    // The timeout counts from the first send, not from each resend.
    entry.timer ??= setTimeout(() => {
      this.settle(id, new WsgateError("publish_timeout", `no ack for publish ${id} within ${this.timeoutMs} ms`));
    }, this.timeoutMs);
  }

  /** An `ack`, or an `error` frame carrying this `id`. */
  settle(id: string, outcome: WsgateError | PublishResult): boolean {
    const entry = this.pending.get(id);
    if (!entry) return false;
    this.pending.delete(id);
    if (entry.timer !== undefined) clearTimeout(entry.timer);
    if (outcome instanceof WsgateError) {
      entry.span?.end(outcome);
      entry.reject(outcome);
    } else {
      entry.span?.end(undefined, outcome.offset);
      entry.resolve(outcome);
    }
    return true;
  }

  /** Rejects every publish: the client is closed. */
  rejectAll(error: WsgateError): void {
    for (const id of [...this.pending.keys()]) this.settle(id, error);
  }
}
