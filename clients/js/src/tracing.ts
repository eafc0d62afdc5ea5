/**
 * OpenTelemetry, when the application has it: a PRODUCER span per publish
 * whose context rides in the frame's `traceparent`, and a CONSUMER span per
 * delivered message, parented on the `traceparent` the gateway put on it.
 * Span names follow the gateway's (`send`, `process`), low-cardinality: the
 * room goes in `messaging.destination.name`.
 *
 * `@opentelemetry/api` is an optional peer dependency, loaded on first use.
 * Without it, or without a registered tracer provider, publishing and
 * delivering make no span and format no context.
 */
import type * as otel from "@opentelemetry/api";

import { VERSION } from "./version.js";

type Api = typeof otel;

/** The SpanKind values (the API's enum, which a type-only import cannot name). */
const PRODUCER = 3;
const CONSUMER = 4;
/** SpanStatusCode.ERROR */
const ERROR = 2;

let loading: Promise<Api | undefined> | undefined;

/** Loads `@opentelemetry/api` once; `undefined` when it is not installed. */
export function loadOtel(): Promise<Api | undefined> {
  loading ??= import("@opentelemetry/api").then(
    (module) => module as Api,
    () => undefined,
  );
  return loading;
}

/** A publish's span, or nothing when tracing is off. */
export interface SendSpan {
  /** The W3C context to put in the frame. */
  traceparent: string;
  tracestate: string | undefined;
  end(error?: { code: string; message: string }, offset?: number): void;
}

export class Tracing {
  private readonly tracer: otel.Tracer;

  constructor(private readonly api: Api) {
    this.tracer = api.trace.getTracer("@wsgate/client", VERSION);
  }

  /**
   * Whether a tracer provider is registered. The API's global provider is a
   * proxy until one is: then it has no tracer to delegate to, and the client
   * makes no span at all.
   */
  private get active(): boolean {
    const provider = this.api.trace.getTracerProvider() as {
      getDelegateTracer?: (name: string, version?: string) => unknown;
    };
    return typeof provider.getDelegateTracer !== "function" || provider.getDelegateTracer("@wsgate/client", VERSION) !== undefined;
  }

  /**
   * Starts the `send` span of a publish, a child of the caller's active
   * context. `undefined` when no provider is registered (nothing to send).
   */
  send(room: string, id: string): SendSpan | undefined {
    if (!this.active) return undefined;
    const span = this.tracer.startSpan("send", {
      kind: PRODUCER,
      attributes: {
        "messaging.system": "wsgate",
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "messaging.destination.name": room,
        "wsgate.publish.id": id,
      },
    });
    const context = span.spanContext();
    if (!this.api.isSpanContextValid(context)) {
      span.end();
      return undefined;
    }
    return {
      traceparent: formatTraceparent(context),
      tracestate: context.traceState?.serialize() || undefined,
      end: (error, offset) => {
        if (offset !== undefined) span.setAttribute("wsgate.offset", offset);
        if (error) {
          span.setAttribute("error.type", error.code);
          span.setStatus({ code: ERROR, message: error.message });
        }
        span.end();
      },
    };
  }

  /**
   * Runs `deliver` inside the `process` span of a delivered message, parented
   * on its `traceparent`. Without a recording span it just runs `deliver`.
   */
  process(room: string, messageId: string, traceparent: string | undefined, offset: number | undefined, deliver: () => void): void {
    if (!this.active) {
      deliver();
      return;
    }
    const parent = traceparent ? parseTraceparent(traceparent) : undefined;
    const parentContext = parent
      ? this.api.trace.setSpanContext(this.api.ROOT_CONTEXT, parent)
      : this.api.ROOT_CONTEXT;
    const attributes: otel.Attributes = {
      "messaging.system": "wsgate",
      "messaging.operation.type": "process",
      "messaging.operation.name": "process",
      "messaging.destination.name": room,
      "messaging.message.id": messageId,
    };
    if (offset !== undefined) attributes["wsgate.offset"] = offset;
    const span = this.tracer.startSpan("process", { kind: CONSUMER, attributes }, parentContext);
    if (!span.isRecording()) {
      span.end();
      deliver();
      return;
    }
    try {
      this.api.context.with(this.api.trace.setSpan(parentContext, span), deliver);
    } finally {
      span.end();
    }
  }
}

function formatTraceparent(context: otel.SpanContext): string {
  const flags = (context.traceFlags & 0xff).toString(16).padStart(2, "0");
  return `00-${context.traceId}-${context.spanId}-${flags}`;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/** A W3C `traceparent` as a remote span context; `undefined` when it is not valid. */
export function parseTraceparent(value: string): otel.SpanContext | undefined {
  const match = TRACEPARENT.exec(value);
  if (!match || match[1] === "ff") return undefined;
  const [, , traceId, spanId, flags] = match as unknown as [string, string, string, string, string];
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16) & 1, isRemote: true };
}
