/**
 * Tokens: where they come from, and when they expire. The payload is read,
 * never verified: verifying is the gateway's job, and the client only needs
 * `exp` to refresh in time.
 */

/** A token, or a function returning one (called on every connect and refresh). */
export type TokenSource = string | (() => string | Promise<string>);

/** The token's `exp` claim in Unix seconds, or `undefined` when it has none or cannot be read. */
export function tokenExpiry(token: string): number | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, "+").replace(/_/g, "/");
    const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
    const claims: unknown = JSON.parse(decodeUtf8(atob(padded)));
    if (claims && typeof claims === "object" && "exp" in claims) {
      const exp = (claims as { exp: unknown }).exp;
      if (typeof exp === "number" && Number.isFinite(exp)) return exp;
    }
  } catch {
    // Not a JWT we can read: no refresh is scheduled; the gateway decides.
  }
  return undefined;
}

function decodeUtf8(binary: string): string {
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

/**
 * Milliseconds from `nowMs` until a refresh is due: `marginMs` before `exp`,
 * or half-way through what is left when that is later, so a token shorter
 * than the margin is still used for a while before it is replaced.
 */
export function refreshDelay(expSeconds: number, nowMs: number, marginMs: number): number {
  const left = expSeconds * 1000 - nowMs;
  return Math.max(0, left - marginMs, left / 2);
}
