// With a tracer provider registered: a PRODUCER span per publish, a CONSUMER span per delivery.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { context, SpanKind, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";

import { type Message, WsgateClient } from "../src/index.js";
import { closing, Gateway, waitFor } from "./helpers/gateway.js";

const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));

let gateway: Gateway;
before(async () => {
  gateway = await Gateway.start();
});
after(() => gateway.stop());

test("a publish is a send span whose context rides in the frame; a delivery is a process span under it", async (t) => {
  const client = closing(t, new WsgateClient(gateway.url()));
  let seenInHandler: string | undefined;
  const got: Message[] = [];
  await client.subscribe("traced", (m) => {
    seenInHandler = trace.getSpan(context.active())?.spanContext().spanId;
    got.push(m);
  }).ready;

  const app = trace.getTracer("test").startSpan("click");
  const { id } = await context.with(trace.setSpan(context.active(), app), () => client.publish("traced", "hello"));
  app.end();
  await waitFor("the message", () => got.length === 1);
  await waitFor("the process span", () => exporter.getFinishedSpans().some((s) => s.name === "process"));

  const spans = exporter.getFinishedSpans();
  const send = spans.find((s) => s.name === "send")!;
  const process = spans.find((s) => s.name === "process")!;
  assert.equal(send.kind, SpanKind.PRODUCER);
  assert.equal(send.parentSpanContext?.spanId, app.spanContext().spanId, "a child of the caller's span");
  assert.equal(send.instrumentationScope.name, "@wsgate/client");
  assert.deepEqual(
    {
      system: send.attributes["messaging.system"],
      operation: send.attributes["messaging.operation.type"],
      room: send.attributes["messaging.destination.name"],
      id: send.attributes["wsgate.publish.id"],
    },
    { system: "wsgate", operation: "send", room: "traced", id },
  );

  // The gateway (traces off here) passes the publish's context on to the delivered frame.
  const [, traceId, spanId] = got[0]!.traceparent!.split("-");
  assert.equal(traceId, send.spanContext().traceId);
  assert.equal(spanId, send.spanContext().spanId);

  assert.equal(process.kind, SpanKind.CONSUMER);
  assert.equal(process.spanContext().traceId, traceId, "one trace from publish to delivery");
  assert.equal(process.parentSpanContext?.spanId, spanId, "parented on the delivered traceparent");
  assert.equal(process.attributes["messaging.destination.name"], "traced");
  assert.equal(process.attributes["messaging.message.id"], got[0]!.id);
  assert.equal(seenInHandler, process.spanContext().spanId, "the handler runs inside the process span");
});

test("a refused publish ends its span with an error status and the code", async (t) => {
  exporter.reset();
  const client = closing(t, new WsgateClient(gateway.url()));
  await assert.rejects(client.publish("bad room", 1));
  const send = exporter.getFinishedSpans().find((s) => s.name === "send")!;
  assert.equal(send.status.code, 2);
  assert.equal(send.attributes["error.type"], "invalid_room");
});
