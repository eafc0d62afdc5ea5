/**
 * The WebSocket the client speaks through: the one passed in the options; in
 * Node, the `ws` package; elsewhere (browsers), the global one. Node 22's
 * global WebSocket (undici's) is not used: a failed attempt there fires
 * `error` without `close` (nodejs/undici#3546), and the HTTP status of a
 * refused upgrade cannot be seen.
 */

/** What the client needs of a WebSocket: the browser API's shape, which `ws` shares. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A WebSocket constructor, such as the global `WebSocket` or `ws`'s default export. */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `WebSocket.OPEN` in every implementation. */
export const OPEN = 1;

let wsPackage: Promise<WebSocketConstructor> | undefined;

/** The constructor to use: `given`, else `ws` in Node (loaded once), else the global one. */
export function webSocketConstructor(given?: WebSocketConstructor): Promise<WebSocketConstructor> {
  if (given) return Promise.resolve(given);
  const inNode = typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node === "string";
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global && !inNode) return Promise.resolve(global);
  wsPackage ??= import("ws").then((module) => module.default as unknown as WebSocketConstructor);
  return wsPackage;
}

/**
 * In Node with `ws`, the HTTP status of a refused upgrade is visible: calls
 * `refused(status)` when the gateway answers the upgrade with a status other
 * than 101. Browsers (and the global WebSocket) show a refusal as an ordinary
 * failed connection, so this does nothing there.
 */
export function onUpgradeRefused(socket: WebSocketLike, refused: (status: number) => void): void {
  const node = socket as unknown as {
    on?: (event: string, listener: (request: unknown, response: { statusCode?: number }) => void) => void;
    terminate?: () => void;
  };
  if (typeof node.on !== "function" || typeof node.terminate !== "function") return;
  node.on("unexpected-response", (_request, response) => {
    refused(response.statusCode ?? 0);
    // With a listener, `ws` leaves the handshake to us: end it, which closes the socket.
    node.terminate?.();
  });
}
