// Recovery across network drops: with history, nothing lost, nothing twice, in order.
import assert from "node:assert/strict";
import { test } from "node:test";

import { type Message, WsgateClient } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";
import { Proxy } from "./helpers/proxy.js";

const FAST = { minReconnectDelayMs: 20, maxReconnectDelayMs: 100 };

/**
 * Publishes `count` numbered messages through a client of its own, cutting
 * the subscriber's network every `cutEvery` and publishing on while it is
 * away; waits for each resume before the next cut. Returns the cuts.
 */
async function publishWithDrops(gateway: Gateway, proxy: Proxy, room: string, count: number, cutEvery: number, resumes: () => number): Promise<number> {
  const publisher = new WsgateClient(gateway.url());
  let cuts = 0;
  try {
    for (let n = 1; n <= count; n++) {
      await publisher.publish(room, { n });
      if (n % cutEvery === 0) {
        proxy.cut();
        cuts++;
      }
      if (n % cutEvery === cutEvery / 2 && cuts > 0) await waitFor(`resume ${cuts}`, () => resumes() === cuts);
    }
  } finally {
    await publisher.close();
  }
  return cuts;
}

test("with history, a subscriber that keeps losing its network misses nothing and sees nothing twice", async (t) => {
  const gateway = await Gateway.running(t, ["--history-size", "1000"]);
  const proxy = await Proxy.start(gateway.addr);
  t.after(() => proxy.stop());
  const client = closing(t, new WsgateClient(proxy.url(), FAST));
  const got: Message[] = [];
  const sub = client.subscribe("ticks", (m) => got.push(m), { recover: true });
  await sub.ready;
  const outcomes: boolean[] = [];
  sub.on("resubscribed", ({ recovered }) => outcomes.push(recovered));

  const cuts = await publishWithDrops(gateway, proxy, "ticks", 300, 50, () => outcomes.length);
  await waitFor("all 300 messages", () => got.length >= 300);
  assert.deepEqual(
    got.map((m) => (m.data as { n: number }).n),
    Array.from({ length: 300 }, (_, i) => i + 1),
    "every message once, in order",
  );
  const offsets = got.map((m) => m.offset!);
  assert.ok(offsets.every((o, i) => i === 0 || o > offsets[i - 1]!), "offsets strictly increase");
  await waitFor("the last resume", () => outcomes.length === cuts);
  assert.deepEqual(outcomes, Array(cuts).fill(true), "every resume recovered");
  // The messages published while it was away came as a replay, not live.
  const metrics = await (await fetch(gateway.httpUrl("/metrics"))).text();
  const replayed = Number(/^websocket_recovered_messages_total(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1] ?? 0);
  assert.ok(replayed > 0, `messages were replayed (${replayed})`);
});

test("without history a resume is answered recovered: false", async (t) => {
  const gateway = await Gateway.running(t);
  const proxy = await Proxy.start(gateway.addr);
  t.after(() => proxy.stop());
  const client = closing(t, new WsgateClient(proxy.url(), FAST));
  const sub = client.subscribe("plain", () => undefined, { recover: true });
  await sub.ready;
  const outcome = new Promise<boolean>((resolve) => sub.on("resubscribed", ({ recovered }) => resolve(recovered)));
  proxy.cut();
  assert.equal(await outcome, false);
});

test("a gateway restart loses its in-memory history: recovered: false, then live again", async (t) => {
  const gateway = await Gateway.running(t, ["--history-size", "100"]);
  const client = closing(t, new WsgateClient(gateway.url(), FAST));
  const got: unknown[] = [];
  const sub = client.subscribe("epochs", (m) => got.push(m.data), { recover: true });
  await sub.ready;
  await client.publish("epochs", "before");
  const outcome = new Promise<boolean>((resolve) => sub.on("resubscribed", ({ recovered }) => resolve(recovered)));
  await gateway.restart();
  assert.equal(await outcome, false, "a new epoch");
  await client.publish("epochs", "after");
  await waitFor("the live message", () => got.length === 2);
  assert.deepEqual(got, ["before", "after"], "offsets start again at 1 in the new epoch and are not taken for duplicates");
});
