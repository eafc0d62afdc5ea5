// Under the gateway's per-connection rate limit nothing the client sends is lost: dropped frames are found and sent again.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WsgateClient, type WsgateError } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";
import { Proxy } from "./helpers/proxy.js";

const ROOMS = Array.from({ length: 16 }, (_, i) => `limited-${i}`);

test("with --max-msgs-per-sec every subscribe and publish gets through, before and after a reconnect", async (t) => {
  const gateway = await Gateway.start(["--max-msgs-per-sec", "10"]);
  t.after(() => gateway.stop());
  const proxy = await Proxy.start(gateway.addr);
  t.after(() => proxy.stop());
  const client = closing(t, new WsgateClient(proxy.url(), { minReconnectDelayMs: 20, maxReconnectDelayMs: 100 }));
  const errors: string[] = [];
  client.on("error", (e: WsgateError) => errors.push(e.code));
  const got = new Map<string, unknown[]>();
  const subs = ROOMS.map((room) => client.subscribe(room, (m) => got.set(room, [...(got.get(room) ?? []), m.data])));
  let resubscribed = 0;
  for (const sub of subs) sub.on("resubscribed", () => resubscribed++);

  await Promise.all(subs.map((s) => s.ready));
  assert.ok(errors.includes("rate_limited"), "16 subscribes at once are over the burst of 10");
  await Promise.all(ROOMS.map((room) => client.publish(room, `to ${room}`)));
  await waitFor("every room's message", () => ROOMS.every((room) => got.get(room)?.length === 1), 20_000);

  proxy.cut();
  await waitFor("every room re-subscribed", () => resubscribed === ROOMS.length, 20_000);
  assert.deepEqual(
    ROOMS.map((room) => got.get(room)),
    ROOMS.map((room) => [`to ${room}`]),
  );
});
