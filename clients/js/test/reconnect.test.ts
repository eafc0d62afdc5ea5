// Reconnecting: after a gateway restart, while the gateway is down, when it goes silent, after a lost ack and a frame too big.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { type AddressInfo, createServer } from "node:net";
import { test } from "node:test";

import { type ConnectionState, WsgateClient, WsgateError } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";
import { Proxy } from "./helpers/proxy.js";

const FAST = { minReconnectDelayMs: 50, maxReconnectDelayMs: 300 };

test("after the gateway restarts the client reconnects and re-subscribes by itself", async (t) => {
  const gateway = await Gateway.running(t);
  const client = closing(t, new WsgateClient(gateway.url(), FAST));
  const states: ConnectionState[] = [];
  client.on("state", (s) => states.push(s));
  const got: unknown[] = [];
  const sub = client.subscribe("news", (m) => got.push(m.data));
  await sub.ready;
  let resubscribed = 0;
  sub.on("resubscribed", () => resubscribed++);

  await gateway.restart(); // SIGTERM: the gateway closes with 1001.
  await waitFor("re-subscribed", () => resubscribed === 1);
  assert.deepEqual(states, ["connected", "disconnected", "connecting", "connected"]);

  const other = closing(t, new WsgateClient(gateway.url()));
  await other.publish("news", "after the restart");
  await waitFor("the message", () => got.length === 1);
  assert.deepEqual(got, ["after the restart"]);
});

test("a publish made while the gateway is down waits and is sent after the reconnect", async (t) => {
  const gateway = await Gateway.running(t);
  const client = closing(t, new WsgateClient(gateway.url(), { ...FAST, maxQueuedPublishes: 2 }));
  const got: unknown[] = [];
  await client.subscribe("queue", (m) => got.push(m.data)).ready;
  await gateway.stop();
  await waitFor("disconnected", () => client.state !== "connected");

  const first = client.publish("queue", "one");
  const second = client.publish("queue", "two");
  await assert.rejects(client.publish("queue", "three"), (e: unknown) => e instanceof WsgateError && e.code === "queue_full");

  await gateway.restart();
  const [a, b] = await Promise.all([first, second]);
  assert.notEqual(a.id, b.id);
  await waitFor("both queued messages", () => got.length === 2);
  assert.deepEqual(got, ["one", "two"], "sent in order, after re-subscribing");
});

test("a gateway that stops answering: the publish times out and the client reconnects", async (t) => {
  const gateway = await Gateway.running(t);
  const client = closing(t, new WsgateClient(gateway.url(), { ...FAST, publishTimeoutMs: 300, pingIntervalMs: 200, pongTimeoutMs: 200 }));
  const states: ConnectionState[] = [];
  client.on("state", (s) => states.push(s));
  await client.subscribe("frozen", () => undefined).ready;
  await gateway.pause();
  try {
    await assert.rejects(client.publish("frozen", 1), (e: unknown) => e instanceof WsgateError && e.code === "publish_timeout");
    await waitFor("the silent connection given up", () => states.includes("disconnected"));
  } finally {
    gateway.resume();
  }
  await waitFor("connected again", () => client.state === "connected");
  const { id } = await client.publish("frozen", 2);
  assert.ok(id);
});

test("a publish whose ack was lost with the connection is sent again and delivered once", async (t) => {
  const gateway = await Gateway.running(t, ["--history-size", "100"]);
  const proxy = await Proxy.start(gateway.addr);
  t.after(() => proxy.stop());
  const watcher = closing(t, new WsgateClient(gateway.url()));
  const got: unknown[] = [];
  await watcher.subscribe("once", (m) => got.push(m.data)).ready;
  const client = closing(t, new WsgateClient(proxy.url(), FAST));
  await client.subscribe("warm-up", () => undefined).ready;

  // Frozen, the gateway takes the frame off the socket only after the cut.
  await gateway.pause();
  const result = client.publish("once", "exactly once");
  await new Promise((resolve) => setTimeout(resolve, 100));
  proxy.cut();
  gateway.resume();
  const { offset } = await result;
  await waitFor("the message", () => got.length >= 1);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.deepEqual(got, ["exactly once"], "delivered once although it may have been sent twice");
  assert.equal(offset, 1);
});

test("a publish the gateway closes the connection over (1009) rejects with too_large and is not sent again", async (t) => {
  const gateway = await Gateway.running(t, ["--max-message-bytes", "1024"]);
  const client = closing(t, new WsgateClient(gateway.url(), FAST));
  const states: ConnectionState[] = [];
  client.on("state", (s) => states.push(s));
  await client.subscribe("big", () => undefined).ready;
  await assert.rejects(client.publish("big", "z".repeat(2_000)), (e: unknown) => e instanceof WsgateError && e.code === "too_large");
  await waitFor("connected again", () => client.state === "connected" && states.length > 1);
  await client.publish("big", "small");
  assert.deepEqual(states, ["connected", "disconnected", "connecting", "connected"], "one reconnect, not a loop");

  // The gateway counts bytes: 500 three-byte characters are over 1024, 800 ASCII ones are not.
  const wide = client.publish("big", "語".repeat(500));
  const narrow = client.publish("big", "a".repeat(800));
  await assert.rejects(wide, (e: unknown) => e instanceof WsgateError && e.code === "too_large");
  assert.ok((await narrow).id, "the smaller frame in bytes is the one sent again");
});

test("a gateway that accepts TCP but never answers the handshake: the attempt times out, and close() lets Node exit", async () => {
  const silent = createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
  const { port } = silent.address() as AddressInfo;
  const script = `
    import { WsgateClient } from ${JSON.stringify(new URL("../src/index.js", import.meta.url).href)};
    const client = new WsgateClient("ws://127.0.0.1:${port}/ws", { connectTimeoutMs: 300, minReconnectDelayMs: 50, maxReconnectDelayMs: 50 });
    const states = [];
    client.on("state", (s) => states.push(s));
    setTimeout(async () => {
      await client.close();
      console.log(JSON.stringify(states));
    }, 800);
  `;
  const started = Date.now();
  const child = spawn(process.execPath, ["--input-type=module", "-e", script]);
  let out = "";
  child.stdout.on("data", (chunk) => (out += chunk));
  const code = await new Promise((resolve) => child.on("exit", resolve));
  silent.close();
  assert.equal(code, 0);
  const states = JSON.parse(out) as string[];
  assert.ok(states.filter((s) => s === "disconnected").length >= 1, `the attempt was given up: ${out}`);
  assert.equal(states.at(-1), "closed");
  assert.ok(Date.now() - started < 5_000, "no timer kept the process alive after close()");
});
