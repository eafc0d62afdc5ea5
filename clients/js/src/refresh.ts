/**
 * Token refresh: a `refresh` frame with a fresh token from the token function,
 * before the connection's token expires. A refusal keeps the current token
 * (the gateway then closes with 4001 at its expiry, and the reconnect asks for
 * a fresh token); a gateway too old to know `refresh` is reconnected at once.
 */
import { WsgateError } from "./errors.js";
import { refreshDelay } from "./token.js";

/** The longest delay `setTimeout` takes (2³¹−1 ms, about 24.8 days); longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RefreshHost {
  /** Only a token function can give a new token. */
  canRefresh(): boolean;
  freshToken(): Promise<string | undefined>;
  /** Sends the `refresh` frame (when the connection is still open). */
  sendRefresh(token: string): void;
  reconnectNow(): void;
  warn(error: WsgateError): void;
}

export class TokenRefresh {
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly host: RefreshHost,
    private readonly marginMs: number,
  ) {}

  /** Plans the next refresh for a token expiring at `exp` (Unix seconds). */
  schedule(exp: number): void {
    this.stop();
    if (!this.host.canRefresh()) return;
    const due = Date.now() + refreshDelay(exp, Date.now(), this.marginMs);
    // Waits in steps, so that tokens valid for weeks are not refreshed at once.
    const wait = () => {
      const left = due - Date.now();
      if (left > 0) this.timer = setTimeout(wait, Math.min(left, MAX_TIMER_MS));
      else void this.now();
    };
    wait();
  }

  /** Refreshes now (also: again, when a `refresh` frame was dropped by the rate limit). */
  async now(): Promise<void> {
    let token: string | undefined;
    try {
      token = await this.host.freshToken();
    } catch (error) {
      this.host.warn(new WsgateError("token_failed", `the token function failed: ${String(error)}`));
      return;
    }
    if (token !== undefined) this.host.sendRefresh(token);
  }

  /** The gateway refused a `refresh`. */
  refused(error: WsgateError): void {
    if (error.code === "unknown_type") {
      // A gateway older than `refresh`: reconnect now, with a fresh token.
      this.host.reconnectNow();
      return;
    }
    this.host.warn(error);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }
}
