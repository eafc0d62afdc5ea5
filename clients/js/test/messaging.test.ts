// Subscribe, publish, ack and error codes against the real gateway.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { type ConnectionState, type Message, WsgateClient, WsgateError } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";

let gateway: Gateway;
before(async () => {
  gateway = await Gateway.start(["--history-size", "100"]);
});
after(() => gateway.stop());

test("a publish reaches every subscriber and resolves on its ack with the offset", async (t) => {
  const alice = closing(t, new WsgateClient(gateway.url()));
  const bob = closing(t, new WsgateClient(gateway.url()));
  const states: ConnectionState[] = [];
  alice.on("state", (s) => states.push(s));
  const got: Message[] = [];
  const sub = bob.subscribe("lobby", (m) => got.push(m));
  await sub.ready;

  const first = await alice.publish("lobby", { text: "hi" });
  const second = await alice.publish("lobby", [1, 2, 3], { id: "my-own-id" });
  assert.match(first.id, /^[0-9a-f]{12}-1$/, "the client gives every publish an id");
  assert.equal(second.id, "my-own-id");
  assert.equal(typeof first.offset, "number");
  assert.equal(second.offset, first.offset! + 1);

  await waitFor("both messages", () => got.length === 2);
  assert.deepEqual(
    got.map((m) => [m.room, m.data, m.offset]),
    [
      ["lobby", { text: "hi" }, first.offset],
      ["lobby", [1, 2, 3], second.offset],
    ],
  );
  assert.ok(got.every((m) => typeof m.id === "string" && m.id.length > 0));
  assert.equal(alice.state, "connected");
  assert.deepEqual(states, ["connected"]);
  await Promise.all([alice.close(), bob.close()]);
  assert.equal(alice.state, "closed");
});

test("several subscriptions to one room share it, and each stops on its own unsubscribe", async (t) => {
  const client = closing(t, new WsgateClient(gateway.url()));
  const a: unknown[] = [];
  const b: unknown[] = [];
  const subA = client.subscribe("shared", (m) => a.push(m.data));
  const subB = client.subscribe("shared", (m) => b.push(m.data));
  await Promise.all([subA.ready, subB.ready]);
  await client.publish("shared", 1);
  await waitFor("both handlers", () => a.length === 1 && b.length === 1);
  subA.unsubscribe();
  assert.equal(subA.active, false);
  await client.publish("shared", 2);
  await waitFor("the remaining handler", () => b.length === 2);
  assert.deepEqual(a, [1]);
  subB.unsubscribe();
  await client.publish("shared", 3);
  // The gateway acks after delivering on one node: had the room still been joined, 3 would be here.
  const probe = client.subscribe("shared-probe", () => undefined);
  await probe.ready;
  assert.deepEqual(b, [1, 2]);
});

test("refusals reject with the gateway's stable error code", async (t) => {
  const client = closing(t, new WsgateClient(gateway.url()));
  const bad = client.subscribe("no spaces allowed", () => undefined);
  await assert.rejects(bad.ready, (e: unknown) => e instanceof WsgateError && e.code === "invalid_room");
  assert.equal(bad.active, false);
  await assert.rejects(client.publish("no spaces allowed", 1), (e: unknown) => e instanceof WsgateError && e.code === "invalid_room");

  // The same id with other data, within the room's history.
  await client.publish("ids", { n: 1 }, { id: "once" });
  const again = await client.publish("ids", { n: 1 }, { id: "once" });
  assert.equal(again.id, "once", "a retry with the same id and data is acknowledged again");
  await assert.rejects(client.publish("ids", { n: 2 }, { id: "once" }), (e: unknown) => e instanceof WsgateError && e.code === "id_conflict");

  // A subscription after a refused one still works: replies stay matched.
  const good = client.subscribe("fine", () => undefined);
  await good.ready;
  await client.close();
  await assert.rejects(client.publish("fine", 1), (e: unknown) => e instanceof WsgateError && e.code === "closed");
});

test("what the gateway would refuse without an answer in order is refused at once", async (t) => {
  const client = closing(t, new WsgateClient(gateway.url()));
  await assert.rejects(client.publish("r", 1, { id: "x".repeat(129) }), (e: unknown) => e instanceof WsgateError && e.code === "invalid_message");
  await assert.rejects(client.publish("r", "y".repeat(70_000)), (e: unknown) => e instanceof WsgateError && e.code === "too_large");
  await client.subscribe("connected-first", () => undefined).ready;
  await assert.rejects(client.publish("r", 10n), (e: unknown) => e instanceof WsgateError && e.code === "invalid_message");
  // Replies stay matched: the next subscribe is answered as itself.
  await client.subscribe("after-refusals", () => undefined).ready;
});

test("leaving a room and joining it again before the replies come: the new subscription waits for its own", async (t) => {
  const client = closing(t, new WsgateClient(gateway.url()));
  const publisher = closing(t, new WsgateClient(gateway.url()));
  await client.subscribe("warm-up", () => undefined).ready;
  const first = client.subscribe("again", () => undefined);
  first.unsubscribe();
  const got: unknown[] = [];
  const second = client.subscribe("again", (m) => got.push(m.data));
  let resubscribed = 0;
  second.on("resubscribed", () => resubscribed++);
  await second.ready;
  await publisher.publish("again", "after ready");
  await waitFor("the message", () => got.length === 1);
  assert.deepEqual(got, ["after ready"]);
  assert.equal(resubscribed, 0, "no reconnect happened");
});

test("without a tracer provider no trace context is sent", async (t) => {
  // This file registers no provider: the gateway (traces off) delivers what the publish carried.
  const client = closing(t, new WsgateClient(gateway.url()));
  const got: Message[] = [];
  await client.subscribe("untraced", (m) => got.push(m)).ready;
  await client.publish("untraced", "x");
  await waitFor("the message", () => got.length === 1);
  assert.equal(got[0]!.traceparent, undefined);
});
