#!/usr/bin/env python3
"""A small, steady load generator for wsgate, used by scripts/check-dashboards.

It exercises every series the dashboard draws, at a modest rate (2 cores):
  - long-lived connections, each subscribed to one or two of several rooms, that
    publish with ids (subscribers receive `message`, publishers get `ack`),
    ping, and now and then unsubscribe and resubscribe;
  - a few invalid frames: not JSON, an unknown type, a bad room, an unsubscribe
    from a room it is not in, a binary frame (so `websocket_errors_total` and
    `type="invalid"` have data);
  - short-lived connections that subscribe, publish and close normally (1000),
    and now and then send an oversize frame (closed with 1009, `too_large`), so
    connection-duration and close-reason series have data;
  - `POST /api/publish` calls, some of them invalid (400), so the HTTP series
    have more than one route and status.

Usage: load.py --url http://127.0.0.1:PORT [--connections 30] [--duration SECONDS]
Runs until --duration elapses or SIGTERM/SIGINT, then closes cleanly and prints
a one-line summary of what it did.
"""

import argparse
import asyncio
import json
import random
import signal
import sys
import urllib.error
import urllib.request

import websockets

ROOMS = [f"room-{i}" for i in range(6)]


class Stats:
    def __init__(self):
        self.counts = {}

    def add(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n

    def line(self):
        return " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))


async def drain(ws, stats):
    """Reads every frame so no outbox fills up (we are not testing slow consumers)."""
    try:
        async for raw in ws:
            try:
                stats.add("recv_" + json.loads(raw).get("type", "?"))
            except (ValueError, AttributeError):
                stats.add("recv_unparsed")
    except websockets.ConnectionClosed:
        pass


async def long_lived(n, ws_url, stop, stats, rng):
    """One steady client: subscribe, then publish/ping with the odd invalid frame."""
    rooms = rng.sample(ROOMS, rng.choice([1, 2]))
    async with websockets.connect(ws_url, max_size=None) as ws:
        reader = asyncio.create_task(drain(ws, stats))
        for room in rooms:
            await ws.send(json.dumps({"type": "subscribe", "room": room}))
        seq = 0
        while not stop.is_set():
            seq += 1
            roll = rng.random()
            if roll < 0.70:
                await ws.send(json.dumps({
                    "type": "publish",
                    "room": rng.choice(rooms if rng.random() < 0.8 else ROOMS),
                    "data": {"n": n, "seq": seq, "text": "hello"},
                    "id": f"c{n}-{seq}",
                }))
                stats.add("publish")
            elif roll < 0.85:
                await ws.send(json.dumps({"type": "ping", "id": f"p{n}-{seq}"}))
                stats.add("ping")
            elif roll < 0.90:
                room = rooms[0]
                await ws.send(json.dumps({"type": "unsubscribe", "room": room}))
                await ws.send(json.dumps({"type": "subscribe", "room": room}))
                stats.add("resubscribe")
            else:
                kind = rng.randrange(5)
                if kind == 0:
                    await ws.send("this is not json")
                elif kind == 1:
                    await ws.send(json.dumps({"type": "shout", "room": "lobby"}))
                elif kind == 2:
                    await ws.send(json.dumps({"type": "subscribe", "room": "bad room!"}))
                elif kind == 3:
                    await ws.send(json.dumps({"type": "unsubscribe", "room": "never-joined"}))
                else:
                    await ws.send(b"\x00\x01binary")
                stats.add("invalid")
            try:
                await asyncio.wait_for(stop.wait(), timeout=rng.uniform(0.2, 0.6))
            except asyncio.TimeoutError:
                pass
        await ws.close()
        await reader


async def keep_long_lived(n, ws_url, stop, stats):
    rng = random.Random(1000 + n)
    while not stop.is_set():
        try:
            await long_lived(n, ws_url, stop, stats, rng)
        except (OSError, websockets.WebSocketException) as e:
            stats.add("conn_error")
            print(f"load: client {n}: {e!r}", file=sys.stderr)
            await asyncio.sleep(0.5)


async def short_lived(ws_url, stop, stats):
    """Opens a connection every ~0.3 s that lives a moment and closes."""
    rng = random.Random(7)
    i = 0
    while not stop.is_set():
        i += 1
        try:
            async with websockets.connect(ws_url, max_size=None) as ws:
                room = rng.choice(ROOMS)
                await ws.send(json.dumps({"type": "subscribe", "room": room}))
                await ws.recv()  # subscribed
                if i % 10 == 0:
                    # Over --max-message-bytes (64 KiB by default): closed with 1009.
                    await ws.send("x" * 70_000)
                    try:
                        await asyncio.wait_for(ws.wait_closed(), timeout=2)
                    except asyncio.TimeoutError:
                        pass
                    stats.add("short_too_large")
                else:
                    await ws.send(json.dumps({
                        "type": "publish", "room": room,
                        "data": {"short": i}, "id": f"s-{i}",
                    }))
                    await asyncio.sleep(rng.uniform(0.05, 0.4))
                    await ws.close()
                    stats.add("short_closed")
        except (OSError, websockets.WebSocketException):
            stats.add("short_error")
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.3)
        except asyncio.TimeoutError:
            pass


def http_publish(base, body, content_type="application/json"):
    req = urllib.request.Request(
        base + "/api/publish", data=body, method="POST",
        headers={"content-type": content_type},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


async def http_publisher(base, stop, stats):
    rng = random.Random(11)
    i = 0
    while not stop.is_set():
        i += 1
        if i % 8 == 0:
            body, ctype = b"{not json", "application/json"
        elif i % 13 == 0:
            body, ctype = json.dumps({"room": "a", "data": 1}).encode(), "text/plain"
        else:
            body = json.dumps({"room": rng.choice(ROOMS), "data": {"http": i}}).encode()
            ctype = "application/json"
        try:
            status = await asyncio.to_thread(http_publish, base, body, ctype)
            stats.add(f"http_{status}")
        except OSError:
            stats.add("http_error")
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.25)
        except asyncio.TimeoutError:
            pass


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="gateway base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--connections", type=int, default=30)
    ap.add_argument("--duration", type=float, default=0, help="seconds; 0 = until signalled")
    args = ap.parse_args()

    base = args.url.rstrip("/")
    ws_url = "ws" + base[len("http"):] + "/ws"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.duration > 0:
        loop.call_later(args.duration, stop.set)

    stats = Stats()
    tasks = [asyncio.create_task(keep_long_lived(n, ws_url, stop, stats))
             for n in range(args.connections)]
    tasks.append(asyncio.create_task(short_lived(ws_url, stop, stats)))
    tasks.append(asyncio.create_task(http_publisher(base, stop, stats)))
    print(f"load: {args.connections} connections, {len(ROOMS)} rooms against {base}", flush=True)
    await stop.wait()
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    except asyncio.TimeoutError:
        for t in tasks:
            t.cancel()
    print("load: done: " + stats.line(), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
