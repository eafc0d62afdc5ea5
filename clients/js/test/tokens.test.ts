// Tokens: refreshed before they expire; a fresh one after 4001; a refused upgrade stops the client in Node.
import assert from "node:assert/strict";
import { test } from "node:test";

import { type ConnectionState, WsgateClient, WsgateError } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";
import { hs256, SECRET, tokenFor } from "./helpers/jwt.js";

const FAST = { minReconnectDelayMs: 50, maxReconnectDelayMs: 300 };

test("a token function's tokens are refreshed in time: the connection outlives each of them", async (t) => {
  const gateway = await Gateway.running(t, ["--jwt-secret", SECRET]);
  let issued = 0;
  const client = closing(
    t,
    new WsgateClient(gateway.url(), {
      ...FAST,
      token: () => {
        issued++;
        return tokenFor("alice", 3);
      },
    }),
  );
  const states: ConnectionState[] = [];
  client.on("state", (s) => states.push(s));
  await client.subscribe("room", () => undefined).ready;
  // 3 s tokens, 5 s of leeway: without refreshes the gateway closes with 4001 at about 8 s.
  await new Promise((resolve) => setTimeout(resolve, 10_000));
  assert.deepEqual(states, ["connected"], "never dropped");
  assert.ok(issued >= 4, `a refresh about every 1.5 s (${issued} tokens)`);
  await client.publish("room", "still here");
});

test("a refused refresh: the gateway closes with 4001 at expiry and the client reconnects with a fresh token", async (t) => {
  const gateway = await Gateway.running(t, ["--jwt-secret", SECRET]);
  let calls = 0;
  // Odd calls connect (alice); even ones refresh, as another user: refused, `forbidden`.
  const client = closing(
    t,
    new WsgateClient(gateway.url(), {
      ...FAST,
      token: () => (++calls % 2 === 1 ? tokenFor("alice", 2) : tokenFor("mallory", 60)),
    }),
  );
  const errors: string[] = [];
  client.on("error", (e) => errors.push(e.code));
  const states: ConnectionState[] = [];
  client.on("state", (s) => states.push(s));
  await client.subscribe("room", () => undefined).ready;
  await waitFor("a reconnect after 4001", () => states.join() === "connected,disconnected,connecting,connected", 15_000);
  assert.ok(errors.includes("forbidden"), `the refused refresh is reported (${errors})`);
  assert.ok(calls >= 3, "the reconnect asked for a fresh token");
});

test("in Node, an upgrade refused with 401 closes the client and says why", async (t) => {
  const gateway = await Gateway.running(t, ["--jwt-secret", SECRET]);
  const badToken = hs256({ sub: "alice", exp: Math.floor(Date.now() / 1000) + 60 }, "another-secret-entirely-0123456789");
  const client = closing(t, new WsgateClient(gateway.url(), { ...FAST, token: badToken }));
  const error = new Promise<WsgateError>((resolve) => client.on("error", resolve));
  const sub = client.subscribe("room", () => undefined);
  assert.equal((await error).code, "http_401");
  assert.equal(client.state, "closed");
  await assert.rejects(sub.ready, (e: unknown) => e instanceof WsgateError && e.code === "http_401");
});

test("a token valid for weeks is not refreshed at once (timers cap at 24.8 days)", async (t) => {
  const gateway = await Gateway.running(t, ["--jwt-secret", SECRET]);
  let issued = 0;
  const client = closing(
    t,
    new WsgateClient(gateway.url(), {
      token: () => {
        issued++;
        return tokenFor("alice", 40 * 24 * 3600);
      },
    }),
  );
  await client.subscribe("room", () => undefined).ready;
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  assert.equal(issued, 1, "one token, for the connection");
});
