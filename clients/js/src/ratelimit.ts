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
 * dropped, and goes back to the front of the backlog. Each round sends about
 * as many frames as the gateway took in the last one. The rounds go on until
 * one finds nothing dropped and nothing waiting.
 *
 * A round that found drops also teaches the client the gateway's rate: the
 * frames it took between two barriers. From then on every frame passes a
 * token bucket at that rate, so the gateway rarely drops one again, and frames
 * wait in order instead. Until the rate is learned (the first second or two
 * over the limit) a publish sent again can arrive after later ones.
 *
 * A watchdog covers drops the gateway did not report, because its one
 * `rate_limited` for that second had already gone. A request or publish left
 * unanswered for `WATCHDOG_MS` starts a round.
 */

/** What the limiter needs of the client. */
export interface RateLimitHost {
  isOpen(): boolean;
  /** Sends a frame; returns its sequence number on the connection. */
  transmit(text: string): number;
  /** Takes off everything sent before frame `seq` and unanswered: how to send each again. */
  unansweredBefore(seq: number): Array<() => void>;
  /** Whether anything sent at or before frame `seq` is still unanswered. */
  waitingSince(seq: number): boolean;
}

const ROUND_DELAY_MS = 1_000;
/** A barrier whose pong has not come by then was dropped too: another round. */
const BARRIER_TIMEOUT_MS = 2_000;
const WATCHDOG_MS = 3_000;

export class RateLimit {
  private roundTimer: ReturnType<typeof setTimeout> | undefined;
  private watchdog: ReturnType<typeof setTimeout> | undefined;
  private backlog: Array<() => void> = [];
  /** The barrier in flight, the previous one, and how many frames to send per round. */
  private barrier = 0;
  private lastBarrier = 0;
  private budget = 1;
  private unknown = false;
  private seq = 0;
  /** The learned rate, frames per second (undefined: never limited), and its token bucket. */
  private rate: number | undefined;
  private tokens = 0;
  private refilled = 0;
  private drainTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly host: RateLimitHost) {}

  /** Between a `rate_limited` and its round's barrier: which frames were dropped is unknown. */
  get uncertain(): boolean {
    return this.unknown;
  }

  /** Sends now, or behind the backlog while a round is under way or the learned rate is used up. */
  send(frame: () => void): void {
    if (this.unknown || this.backlog.length > 0 || !this.take()) {
      this.backlog.push(frame);
      this.scheduleDrain();
    } else {
      frame();
    }
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

  /** Outside rounds, the backlog drains at the learned rate. */
  private scheduleDrain(): void {
    if (this.unknown || this.rate === undefined || this.drainTimer !== undefined || this.roundTimer !== undefined) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      if (!this.host.isOpen()) return;
      while (this.backlog.length > 0 && !this.unknown && this.take()) this.backlog.shift()?.();
      if (this.backlog.length > 0) this.scheduleDrain();
    }, 1000 / (this.rate ?? 1));
  }

  /** Every frame's sequence number, as it is sent: the watchdog's clock. */
  sent(seq: number): void {
    this.seq = seq;
    if (this.watchdog !== undefined) return;
    const since = seq;
    this.watchdog = setTimeout(() => {
      this.watchdog = undefined;
      if (this.host.isOpen() && this.host.waitingSince(since)) this.limited();
      else if (this.seq > since) this.sent(this.seq);
    }, WATCHDOG_MS);
  }

  /** A `rate_limited` arrived (or the watchdog saw a frame left unanswered). */
  limited(): void {
    this.unknown = true;
    this.scheduleRound();
  }

  /** A `pong`: true when it was this limiter's barrier. */
  pong(id: string): boolean {
    if (!id.startsWith("sync-")) return false;
    if (Number(id.slice(5)) !== this.barrier) return true;
    clearTimeout(this.roundTimer);
    this.roundTimer = undefined;
    const dropped = this.host.unansweredBefore(this.barrier);
    // The frames the gateway handled since the last barrier: about what it takes in a second.
    this.budget = Math.max(1, this.barrier - this.lastBarrier - dropped.length);
    if (dropped.length > 0) {
      // It dropped some while taking these: at its limit, so that is its rate (a lower one wins).
      this.rate = Math.min(this.rate ?? Number.POSITIVE_INFINITY, this.budget);
      this.tokens = 0;
      this.refilled = Date.now();
    }
    this.lastBarrier = this.barrier;
    this.unknown = false;
    this.backlog = [...dropped, ...this.backlog];
    if (dropped.length > 0) this.scheduleRound();
    else this.scheduleDrain();
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
    clearTimeout(this.watchdog);
    clearTimeout(this.drainTimer);
    this.roundTimer = this.watchdog = this.drainTimer = undefined;
    this.backlog = [];
    this.unknown = false;
  }

  private scheduleRound(): void {
    if (this.roundTimer !== undefined) return;
    this.roundTimer = setTimeout(() => {
      this.roundTimer = undefined;
      if (!this.host.isOpen()) return;
      // With the barrier, as many frames as the gateway took in the last round.
      for (const frame of this.backlog.splice(0, Math.max(1, this.budget - 1))) frame();
      this.tokens = 0;
      this.refilled = Date.now();
      this.barrier = this.host.transmit(JSON.stringify({ type: "ping", id: `sync-${this.seq + 1}` }));
      this.roundTimer = setTimeout(() => {
        this.roundTimer = undefined;
        this.unknown = true;
        this.scheduleRound();
      }, BARRIER_TIMEOUT_MS);
    }, ROUND_DELAY_MS);
  }
}
