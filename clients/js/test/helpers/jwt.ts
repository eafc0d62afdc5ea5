/** HS256 tokens for a gateway started with `--jwt-secret`. */
import { createHmac } from "node:crypto";

export const SECRET = "a-test-secret-that-is-long-enough-for-hs256";

export function hs256(claims: Record<string, unknown>, secret = SECRET): string {
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode(claims)}`;
  const signature = createHmac("sha256", secret).update(body).digest("base64url");
  return `${body}.${signature}`;
}

/** A token for `sub` valid for `seconds` from now. */
export function tokenFor(sub: string, seconds: number): string {
  return hs256({ sub, exp: Math.floor(Date.now() / 1000) + seconds });
}
