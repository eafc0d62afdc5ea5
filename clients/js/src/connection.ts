/**
 * The socket under the client: opens it (with the token offered as the
 * `wsgate.token.<JWT>` subprotocol, which stays out of URLs and access logs),
 * notices when it is gone (a close, or a silent gateway after a `ping`), and
 * opens the next one after a backoff with full jitter. It knows nothing of
 * rooms or publishes: the client does (`client.ts`).
 */
import { WsgateError } from "./errors.js";
import type { TokenSource } from "./token.js";
import { OPEN, onUpgradeRefused, type WebSocketConstructor, type WebSocketLike, webSocketConstructor } from "./transport.js";

export interface ConnectionOptions {
  url: string;
  token: TokenSource | undefined;
  WebSocket: WebSocketConstructor | undefined;
  minReconnectDelayMs: number;
  maxReconnectDelayMs: number;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  connectTimeoutMs: number;
}

export interface ConnectionEvents {
  connecting(): void;
  /** Open; `token` is the one it was opened with. */
  opened(token: string | undefined): void;
  frame(frame: { type: string }): void;
  /** Gone (with the close code, when there was one); the next attempt is scheduled. */
  dropped(code: number | undefined): void;
  /** Gone for good: the gateway refused the upgrade with 401 or 403 (visible in Node only). */
  failed(error: WsgateError): void;
  /** Worth telling the application, but not fatal. */
  warn(error: WsgateError): void;
}

/** A close code of our own (4000–4999 are for applications): the gateway went silent, or never answered. */
const SILENT_GATEWAY = 4000;

/** What one attempt learned before it ended. */
interface Attempt {
  /** The HTTP status of a refused upgrade (Node's `ws` only). */
  refusedWith?: number;
  timer?: ReturnType<typeof setTimeout>;
}

export class Connection {
  private socket: WebSocketLike | undefined;
  /** The current socket's attempt, and how many attempts have failed in a row. */
  private current: Attempt | undefined;
  private attempt = 0;
  private stopped = false;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private pongTimer: ReturnType<typeof setTimeout> | undefined;
  private lastHeard = 0;
  private pings = 0;
  private closedResolve!: () => void;
  /** Resolves once stopped and the socket is closed. */
  readonly closed: Promise<void>;
  /** The token the current connection was opened or refreshed with. */
  token: string | undefined;

  constructor(
    private readonly options: ConnectionOptions,
    private readonly events: ConnectionEvents,
  ) {
    const url = new URL(options.url);
    if (url.protocol !== "ws:" && url.protocol !== "wss:") {
      throw new TypeError(`a wsgate URL is ws: or wss:, not ${url.protocol}`);
    }
    this.closed = new Promise((resolve) => (this.closedResolve = resolve));
  }

  get isOpen(): boolean {
    return this.socket !== undefined && this.socket.readyState === OPEN;
  }

  /** Only a token function can give a new token to refresh with. */
  get canRefresh(): boolean {
    return typeof this.options.token === "function";
  }

  async freshToken(): Promise<string | undefined> {
    const source = this.options.token;
    return typeof source === "function" ? await source() : source;
  }

  start(): void {
    void this.connect();
  }

  send(text: string): void {
    this.socket?.send(text);
  }

  /** Drops the current socket and connects again at once (a new token, say). */
  reconnectNow(): void {
    this.attempt = 0;
    if (this.socket) this.abandon(this.socket, {}, 1000, "reconnecting");
  }

  /** Stops for good: closes the socket, and no further attempt is made. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.current?.timer);
    this.stopHeartbeat();
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) {
      this.closedResolve();
      return;
    }
    // Resolve once the close handshake ends, or after a second if the gateway is gone.
    const done = setTimeout(() => this.closedResolve(), 1_000);
    socket.onclose = () => {
      clearTimeout(done);
      this.closedResolve();
    };
    socket.onmessage = null;
    socket.close(1000, "client closed");
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.events.connecting();
    let token: string | undefined;
    try {
      token = await this.freshToken();
    } catch (error) {
      this.events.warn(new WsgateError("token_failed", `no token to connect with: ${String(error)}`));
      this.scheduleReconnect();
      return;
    }
    let socket: WebSocketLike;
    try {
      const Socket = await webSocketConstructor(this.options.WebSocket);
      if (this.stopped) return;
      const protocols = token === undefined ? undefined : ["wsgate.v1", `wsgate.token.${token}`];
      socket = new Socket(this.options.url, protocols);
    } catch (error) {
      // No WebSocket implementation, or a token that is not a valid subprotocol token.
      this.events.warn(new WsgateError("connect_failed", `cannot open a WebSocket: ${String(error)}`));
      this.scheduleReconnect();
      return;
    }
    this.socket = socket;
    this.token = token;
    const attempt: Attempt = {};
    this.current = attempt;
    onUpgradeRefused(socket, (status) => (attempt.refusedWith = status));
    // A handshake that never ends (a gateway that accepts TCP but never answers) is given up.
    attempt.timer = setTimeout(() => {
      if (socket.readyState !== OPEN) this.abandon(socket, attempt, SILENT_GATEWAY, "no answer");
    }, this.options.connectTimeoutMs);
    socket.onopen = () => {
      clearTimeout(attempt.timer);
      this.opened(socket);
    };
    socket.onmessage = (event) => this.heard(socket, event.data);
    socket.onclose = (event) => {
      clearTimeout(attempt.timer);
      this.gone(socket, attempt, event.code);
    };
    // Usually a close follows; some implementations end a failed attempt with `error` alone.
    socket.onerror = () => {
      if (socket.readyState !== OPEN) this.abandon(socket, attempt, SILENT_GATEWAY, "failed");
    };
  }

  private opened(socket: WebSocketLike): void {
    if (socket !== this.socket) return;
    this.attempt = 0;
    this.lastHeard = Date.now();
    if (this.options.pingIntervalMs > 0) {
      this.heartbeatTimer = setInterval(() => this.heartbeat(socket), this.options.pingIntervalMs);
    }
    this.events.opened(this.token);
  }

  private heard(socket: WebSocketLike, data: unknown): void {
    if (socket !== this.socket) return;
    this.lastHeard = Date.now();
    if (typeof data !== "string") return; // The gateway sends text frames only.
    let frame: unknown;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame && typeof frame === "object" && typeof (frame as { type?: unknown }).type === "string") {
      this.events.frame(frame as { type: string });
    }
  }

  /**
   * Browsers cannot see WebSocket pings, and a half-open TCP connection looks
   * open until a write fails: send a `ping` frame every interval, and give up
   * on a gateway that has said nothing within `pongTimeoutMs` of one.
   */
  private heartbeat(socket: WebSocketLike): void {
    if (socket !== this.socket || socket.readyState !== OPEN || this.pongTimer !== undefined) return;
    const sentAt = Date.now();
    socket.send(JSON.stringify({ type: "ping", id: `hb-${++this.pings}` }));
    this.pongTimer = setTimeout(() => {
      this.pongTimer = undefined;
      // Anything heard since the ping (its pong, or any frame) proves the gateway is there.
      if (socket === this.socket && this.lastHeard < sentAt) this.abandon(socket, {}, SILENT_GATEWAY, "gateway silent");
    }, this.options.pongTimeoutMs);
  }

  private stopHeartbeat(): void {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.pongTimer);
    this.pongTimer = undefined;
  }

  /** Stops listening to `socket` (its close handshake may never end) and carries on as if it had closed. */
  private abandon(socket: WebSocketLike, attempt: Attempt, code: number, reason: string): void {
    if (socket !== this.socket) return;
    clearTimeout(attempt.timer);
    socket.onopen = socket.onmessage = socket.onclose = null;
    // Kept, never null: `ws` throws an `error` event that has no listener.
    socket.onerror = () => undefined;
    const terminate = (socket as { terminate?: () => void }).terminate;
    try {
      if (typeof terminate === "function") terminate.call(socket);
      else socket.close(code, reason);
    } catch {
      // Already closing: nothing more to end.
    }
    this.gone(socket, attempt, undefined);
  }

  private gone(socket: WebSocketLike, attempt: Attempt, code: number | undefined): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.stopHeartbeat();
    if (this.stopped) return;
    const refusedWith = attempt.refusedWith;
    if (refusedWith === 401 || refusedWith === 403) {
      this.events.failed(
        new WsgateError(
          refusedWith === 401 ? "http_401" : "http_403",
          `the gateway refused the upgrade with HTTP ${refusedWith}${refusedWith === 401 ? " (a bad or expired token)" : ""}`,
        ),
      );
      return;
    }
    this.events.dropped(code);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const { minReconnectDelayMs: min, maxReconnectDelayMs: max } = this.options;
    const cap = Math.min(max, min * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const delay = min + Math.random() * Math.max(0, cap - min);
    this.reconnectTimer = setTimeout(() => void this.connect(), delay);
  }
}
