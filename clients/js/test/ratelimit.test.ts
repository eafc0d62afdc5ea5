// Under the gateway's per-connection rate limit nothing the client sends is lost: dropped frames are found and sent again.
import assert from "node:assert/strict";
import { test } from "node:test";

import { WsgateClient, WsgateError } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";
import { Proxy } from "./helpers/proxy.js";

const ROOMS = Array.from({ length: 16 }, (_, i) => `limited-${i}`);

test("with --max-msgs-per-sec every subscribe and publish gets through, before and after a reconnect", async (t) => {
  const gateway = await Gateway.running(t, ["--max-msgs-per-sec", "10"]);
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

test("under the limit an error still answers its own request, and one publisher's messages keep their order", async (t) => {
  const gateway = await Gateway.running(t, ["--max-msgs-per-sec", "10"]);
  const client = closing(t, new WsgateClient(gateway.url()));
  const reader = closing(t, new WsgateClient(gateway.url()));
  const got: number[] = [];
  await reader.subscribe("ordered", (m) => got.push(m.data as number)).ready;

  // Eleven subscribes: the eleventh is over the burst and dropped; then a refused one.
  const subs = Array.from({ length: 11 }, (_, i) => client.subscribe(`r${i}`, () => undefined));
  await new Promise((resolve) => setTimeout(resolve, 250));
  const bad = client.subscribe("bad room", () => undefined);
  await assert.rejects(bad.ready, (e: unknown) => e instanceof WsgateError && e.code === "invalid_room");
  await Promise.all(subs.map((s) => s.ready));

  // Thirty publishes 40 ms apart, at 10 frames a second: most wait, none overtakes another.
  const acks: Promise<unknown>[] = [];
  for (let n = 1; n <= 30; n++) {
    acks.push(client.publish("ordered", n));
    await new Promise((resolve) => setTimeout(resolve, 40));
  }
  await Promise.all(acks);
  await waitFor("all thirty", () => got.length === 30, 20_000);
  assert.deepEqual(got, Array.from({ length: 30 }, (_, i) => i + 1));
});

test("on a gateway without a limit, a slow gateway never makes the client hold frames back", async (t) => {
  const gateway = await Gateway.running(t);
  const client = closing(t, new WsgateClient(gateway.url()));
  const got: number[] = [];
  await client.subscribe("slow", (m) => got.push(m.data as number)).ready;
  await gateway.pause();
  const first = client.publish("slow", 1);
  await new Promise((resolve) => setTimeout(resolve, 3_500));
  const later = [client.publish("slow", 2), client.publish("slow", 3)];
  gateway.resume();
  await Promise.all([first, ...later]);
  await client.publish("slow", 4);
  await waitFor("all four", () => got.length === 4);
  assert.deepEqual(got, [1, 2, 3, 4]);
});
