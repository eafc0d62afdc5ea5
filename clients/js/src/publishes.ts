/**
 * Publishes waiting for their `ack`. Every publish has an `id`, so one that
 * was sent but not acknowledged before a drop is sent again, with the same
 * `id`, after the reconnect: the gateway acknowledges a repeated `id` with the
 * first one's offset instead of delivering it twice (within the room's
 * history; without history a repeat may be delivered twice).
 */
import { WsgateError } from "./errors.js";
import { utf8Length } from "./ids.js";
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
  /** The frame's size in UTF-8 bytes, what the gateway's limit counts. */
  bytes: number;
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
    private readonly maxBytes: number,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  has(id: string): boolean {
    return this.pending.has(id);
  }

  /**
   * Registers a publish, to be sent by `resend` (now, after a connect, or
   * when the rate limiter lets it go). While disconnected (`bounded`) it is refused when `maxQueued`
   * already wait. `build` runs at the first send, or at once when it can: a
   * publish that waits for the first connection gets its span when the client
   * knows whether it can trace.
   */
  add(id: string, build: FrameBuilder, buildNow: boolean, bounded: boolean): Promise<PublishResult> {
    return new Promise((resolve, reject) => {
      if (bounded && this.pending.size >= this.maxQueued) {
        reject(new WsgateError("queue_full", `${this.maxQueued} publishes already wait for a connection`));
        return;
      }
      const entry: Pending = { build, frame: "", bytes: 0, seq: undefined, resolve, reject, span: undefined, timer: undefined };
      this.pending.set(id, entry);
      if (buildNow) this.built(id, entry);
    });
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

  /** Every waiting publish's id, in the order they were published. */
  ids(): string[] {
    return [...this.pending.keys()];
  }

  /** Sends one not yet sent on this connection (new, or see `unansweredBefore`), if it still waits. */
  resend(id: string, send: Send): void {
    const entry = this.pending.get(id);
    if (entry && entry.seq === undefined) this.sent(id, entry, send);
  }

  /** The connection dropped: nothing is in flight on it any more. */
  disconnected(): void {
    for (const entry of this.pending.values()) entry.seq = undefined;
  }

  /** The largest publish (in bytes) sent on the connection the gateway just closed with 1009 (too big). */
  largestSent(): string | undefined {
    let largest: [string, number] | undefined;
    for (const [id, entry] of this.pending) {
      if (entry.seq !== undefined && (!largest || entry.bytes > largest[1])) largest = [id, entry.bytes];
    }
    return largest?.[0];
  }

  /** Builds the frame; false when it is too large to send (the publish is then rejected). */
  private built(id: string, entry: Pending): boolean {
    if (entry.build) {
      try {
        ({ frame: entry.frame, span: entry.span } = entry.build());
      } catch (error) {
        // A BigInt, or a cycle: nothing to send.
        this.settle(id, new WsgateError("invalid_message", `data is not JSON: ${String(error)}`));
        return false;
      }
      entry.build = undefined;
      entry.bytes = utf8Length(entry.frame);
    }
    if (entry.bytes <= this.maxBytes) return true;
    // The gateway would close the connection over it (1009).
    this.settle(id, new WsgateError("too_large", `the publish frame is ${entry.bytes} bytes, over ${this.maxBytes}`));
    return false;
  }

  private sent(id: string, entry: Pending, send: Send): void {
    if (!this.built(id, entry)) return;
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
