/**
 * What the gateway's per-connection rate limit (`--max-msgs-per-sec`) drops,
 * found and sent again, in order.
 *
 * The gateway does not handle a frame over the limit. It answers the first
 * such frame in each second with `rate_limited`, and the others not at all.
 * After a `rate_limited`, the client cannot know which frames were dropped, so
 * it cannot match an error without an `id` to a request by order. Until it
 * knows again:
 * - id-less errors are not matched (the requests they answer are sent again,
 *   and answered again);
 * - new frames wait in the backlog, behind what is to be sent again, so that
 *   one publisher's messages keep their order.
 *
 * A second later (the limit refills each second) a round begins. The client
 * sends part of the backlog, then a barrier: a `ping` whose `pong` shows that
 * every frame before it was answered or dropped. What is still unanswered was
 * dropped, and goes back to the front of the backlog. The rounds go on until
 * one finds nothing dropped; then what still waits is sent.
 *
 * A round that found drops also gives the gateway's rate: the frames it took
 * between two barriers, not counting the barrier. From then on every frame
 * passes a token bucket at that rate (halved whenever a barrier itself is
 * dropped), so frames wait in order instead of being dropped. Until the rate
 * is learned (the first second or two over the limit), a publish sent again
 * can arrive after later ones.
 *
 * Nothing here runs on a gateway without a limit: only a `rate_limited`
 * starts a round.
 */

/** What the limiter needs of the client. */
export interface RateLimitHost {
  isOpen(): boolean;
  /** Sends a frame; returns its sequence number on the connection. */
  transmit(text: string): number;
  /** Takes off everything sent before frame `seq` and unanswered: how to send each again. */
  unansweredBefore(seq: number): Array<() => void>;
}

const ROUND_DELAY_MS = 1_000;
/** A barrier whose pong has not come by then was dropped too. */
const BARRIER_TIMEOUT_MS = 2_000;

export class RateLimit {
  private roundTimer: ReturnType<typeof setTimeout> | undefined;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;
  private backlog: Array<() => void> = [];
  /** The barrier in flight (0: none), and the one before. */
  private barrier = 0;
  private lastBarrier = 0;
  /** Frames to send in the next round, barrier included. */
  private budget = 1;
  private unknown = false;
  /** Id-less errors dropped while `unknown`: their requests look dropped at the pong, but were not. */
  private unmatched = 0;
  private seq = 0;
  /** The learned rate in frames per second (undefined: never limited), and its token bucket. */
  private rate: number | undefined;
  private tokens = 0;
  private refilled = 0;

  constructor(private readonly host: RateLimitHost) {}

  /** Between a `rate_limited` and its round's barrier: which frames were dropped is unknown. */
  get uncertain(): boolean {
    return this.unknown;
  }

  /** Whether frames are being held back (a round, or the learned pace). */
  get holding(): boolean {
    return this.unknown || this.backlog.length > 0;
  }

  /** Sends now, or behind the backlog while a round is under way or the learned rate is used up. */
  send(frame: () => void): void {
    if (this.holding || !this.take()) {
      this.backlog.push(frame);
      this.scheduleDrain();
    } else {
      frame();
    }
  }

  /** Every frame's sequence number, as it is sent. */
  sent(seq: number): void {
    this.seq = seq;
  }

  /** A `rate_limited` arrived. */
  limited(): void {
    this.unknown = true;
    if (this.rate !== undefined) this.slowDown();
    this.scheduleRound();
  }

  /** An id-less error was not matched because `uncertain`. */
  unmatchedError(): void {
    this.unmatched++;
  }

  /** A `pong`: true when it was this limiter's barrier. */
  pong(id: string): boolean {
    if (!id.startsWith("sync-")) return false;
    if (this.barrier === 0 || Number(id.slice(5)) !== this.barrier) return true;
    clearTimeout(this.roundTimer);
    this.roundTimer = undefined;
    const dropped = this.host.unansweredBefore(this.barrier);
    const reallyDropped = Math.max(0, dropped.length - this.unmatched);
    // What the gateway took since the last barrier, not counting this one.
    const taken = Math.max(1, this.barrier - this.lastBarrier - 1 - reallyDropped);
    if (reallyDropped > 0) {
      // It dropped some while taking these: at its limit, so that is its rate (a lower one wins).
      this.rate = Math.min(this.rate ?? Number.POSITIVE_INFINITY, taken);
      this.tokens = 0;
      this.refilled = Date.now();
    }
    this.budget = taken + 1;
    this.lastBarrier = this.barrier;
    this.barrier = 0;
    this.unknown = false;
    this.unmatched = 0;
    this.backlog = [...dropped, ...this.backlog];
    if (reallyDropped > 0) {
      this.scheduleRound();
    } else if (this.rate === undefined) {
      // Nothing dropped, and no pace to keep: send what waits, in order.
      for (const frame of this.backlog.splice(0)) frame();
    } else {
      this.scheduleDrain();
    }
    return true;
  }

  /** A new connection: everything is sent afresh on it (the learned rate stays: same gateway, same limit). */
  reset(seq: number): void {
    this.stop();
    this.lastBarrier = seq;
    this.seq = seq;
    this.tokens = this.rate ?? 0;
    this.refilled = Date.now();
  }

  stop(): void {
    clearTimeout(this.roundTimer);
    clearTimeout(this.drainTimer);
    this.roundTimer = this.drainTimer = undefined;
    this.backlog = [];
    this.barrier = 0;
    this.unknown = false;
    this.unmatched = 0;
  }

  /** A token from the bucket, if the rate is known; always true before. */
  private take(): boolean {
    if (this.rate === undefined) return true;
    const now = Date.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.refilled) / 1000) * this.rate);
    this.refilled = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private slowDown(): void {
    this.rate = Math.max(1, Math.floor((this.rate ?? 2) / 2));
    this.budget = Math.max(1, Math.floor(this.budget / 2));
  }

  /** Outside rounds, the backlog drains at the learned rate. */
  private scheduleDrain(): void {
    if (this.unknown || this.rate === undefined || this.drainTimer !== undefined || this.roundTimer !== undefined) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      if (!this.host.isOpen()) return;
      while (this.backlog.length > 0 && !this.unknown && this.take()) this.backlog.shift()?.();
      if (this.backlog.length > 0) this.scheduleDrain();
    }, 1000 / this.rate);
  }

  private scheduleRound(): void {
    if (this.roundTimer !== undefined) return;
    clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    this.roundTimer = setTimeout(() => {
      this.roundTimer = undefined;
      if (!this.host.isOpen()) return;
      // A round after a dropped barrier sends only a new barrier.
      if (this.barrier === 0) {
        for (const frame of this.backlog.splice(0, Math.max(0, this.budget - 1))) frame();
      }
      this.tokens = 0;
      this.refilled = Date.now();
      this.barrier = this.host.transmit(JSON.stringify({ type: "ping", id: `sync-${this.seq + 1}` }));
      this.roundTimer = setTimeout(() => {
        // The barrier was dropped too (or the gateway is busy, replaying): slower, and another one.
        this.roundTimer = undefined;
        if (this.rate !== undefined) this.slowDown();
        this.scheduleRound();
      }, BARRIER_TIMEOUT_MS);
    }, ROUND_DELAY_MS);
  }
}
