/** Publish ids: their size as the gateway counts it, and this client's prefix. */

export function utf8Length(text: string): number {
  return new TextEncoder().encode(text).length;
}

/**
 * The prefix of this client's publish ids: 48 random bits in hex, from the
 * platform's CSPRNG where there is one (browsers, Node 19+). Node 18 has no
 * global `crypto`: there `Math.random` (seeded per process) is mixed with the
 * clock, so two clients' prefixes still collide only by chance.
 */
export function randomId(): string {
  const bytes = new Uint8Array(6);
  const crypto = (globalThis as { crypto?: { getRandomValues(array: Uint8Array): Uint8Array } }).crypto;
  if (crypto) {
    crypto.getRandomValues(bytes);
  } else {
    const now = Date.now();
    for (let i = 0; i < bytes.length; i++) bytes[i] = (Math.floor(Math.random() * 256) ^ (now / 2 ** (8 * i))) & 0xff;
  }
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
