// The parts with no network: token expiry, refresh timing, de-duplication.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { VERSION } from "../src/index.js";
import { Room } from "../src/subscription.js";
import { refreshDelay, tokenExpiry } from "../src/token.js";
import { parseTraceparent } from "../src/tracing.js";
import { hs256 } from "./helpers/jwt.js";

test("exp is read from a token's payload, without verifying it", () => {
  assert.equal(tokenExpiry(hs256({ sub: "ü-ser", exp: 1767225600 })), 1767225600);
  assert.equal(tokenExpiry(hs256({ sub: "x" })), undefined);
  assert.equal(tokenExpiry("not a token"), undefined);
  assert.equal(tokenExpiry("a.!!!.c"), undefined);
});

test("a refresh is due a margin before exp, or half-way for short tokens", () => {
  const now = 1_000_000_000_000;
  assert.equal(refreshDelay(now / 1000 + 3600, now, 60_000), 3_540_000);
  assert.equal(refreshDelay(now / 1000 + 10, now, 60_000), 5_000);
  assert.equal(refreshDelay(now / 1000 - 10, now, 60_000), 0);
});

test("a room hands over each offset once, and starts again in a new epoch", () => {
  const room = new Room("r");
  room.subscribed({ offset: 5, epoch: "e1" }, true);
  assert.deepEqual([6, 7, 7, 6, 8].map((o) => room.accept(o)), [true, true, false, false, true]);
  room.recover = true;
  assert.equal(room.subscribeFrame(), '{"type":"subscribe","room":"r","since":{"offset":8,"epoch":"e1"}}');
  room.subscribed({ offset: 2, epoch: "e2", recovered: false }, true);
  assert.deepEqual([1, 2, 3].map((o) => room.accept(o)), [false, false, true]);
  assert.equal(room.accept(undefined), true, "a room without history has no offsets to compare");
});

test("traceparent parsing follows W3C Trace Context", () => {
  const ok = parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  assert.deepEqual(ok, { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 1, isRemote: true });
  for (const bad of [
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
  ]) {
    assert.equal(parseTraceparent(bad), undefined, bad);
  }
});

test("the version the client reports is the package's", () => {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8"));
  assert.equal(VERSION, pkg.version);
});
