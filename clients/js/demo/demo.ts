/**
 * The gateway's demo page (`GET /`), built on the client library and bundled
 * into `src/demo.bundle.js` (`npm run build:demo`), which the gateway serves
 * at `/demo.js`.
 *
 * It subscribes to `?room=` (default `lobby`), shows every message with its
 * trace id (a link into Jaeger when the gateway has `--jaeger-ui-url`),
 * publishes what the user types, and publishes `?autopublish=TEXT` once
 * subscribed, which makes demos and browser tests one URL.
 *
 * Tracing: the page registers the OpenTelemetry web SDK, so every publish is a
 * `send` span started in the browser and every delivery a `process` span. With
 * the gateway's `--demo-otlp-endpoint` it exports them over OTLP/HTTP, and one
 * Jaeger trace shows the sending browser, the gateways, NATS and the receiving
 * browser. The endpoint comes from the gateway, never from the page's URL.
 */
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, type SpanProcessor, WebTracerProvider } from "@opentelemetry/sdk-trace-web";

import { type Message, type Subscription, WsgateClient, WsgateError } from "../src/index.js";

/** A value the gateway filled into the page (`src/demo.html`), or "" when its flag is unset. */
function setting(name: string): string {
  return document.querySelector<HTMLMetaElement>(`meta[name="wsgate:${name}"]`)?.content ?? "";
}

const config = {
  /** Jaeger UI base URL (`--jaeger-ui-url`). */
  jaegerUiUrl: setting("jaeger-ui-url"),
  /** OTLP/HTTP endpoint (`--demo-otlp-endpoint`); `/v1/traces` is added. */
  otlpEndpoint: setting("demo-otlp-endpoint"),
};

const spanProcessors: SpanProcessor[] = [];
if (config.otlpEndpoint) {
  const exporter = new OTLPTraceExporter({
    url: `${config.otlpEndpoint.replace(/\/$/, "")}/v1/traces`,
    // Headers (even none) make the exporter use fetch, whose CORS preflight
    // collectors answer, rather than sendBeacon.
    headers: {},
  });
  spanProcessors.push(new BatchSpanProcessor(exporter, { scheduledDelayMillis: 500 }));
}
// Registered even without an endpoint, so that each publish still starts a
// trace in the browser and the page can show and link its id.
const provider = new WebTracerProvider({
  resource: resourceFromAttributes({ "service.name": "wsgate-demo" }),
  spanProcessors,
});
provider.register();
addEventListener("pagehide", () => void provider.forceFlush());

const params = new URLSearchParams(location.search);
const roomInput = document.getElementById("room") as HTMLInputElement;
const textInput = document.getElementById("text") as HTMLInputElement;
const log = document.getElementById("log") as HTMLUListElement;
const status = document.getElementById("status") as HTMLSpanElement;
const roomLabel = document.getElementById("room-label") as HTMLSpanElement;

const scheme = location.protocol === "https:" ? "wss" : "ws";
const client = new WsgateClient(`${scheme}://${location.host}/ws`);
client.on("state", (state) => {
  status.textContent = state === "disconnected" ? "disconnected; retrying" : state;
  status.className = state === "connected" ? "open" : state === "connecting" ? "" : "closed";
});

let room = params.get("room") || "lobby";
let autopublish = params.get("autopublish");
let subscription: Subscription | undefined;
roomInput.value = room;

function traceId(traceparent: string | undefined): string | undefined {
  return traceparent?.split("-")[1];
}

type Meta = [label: string, value: string, href?: string];

function show(kind: "message" | "error", data: unknown, meta: Meta[]): void {
  const li = document.createElement("li");
  li.className = kind;
  const line = document.createElement("div");
  line.className = "meta";
  for (const [label, value, href] of meta) {
    const item = document.createElement(href ? "a" : "span");
    item.textContent = `${label} ${value}`;
    if (item instanceof HTMLAnchorElement && href) {
      item.href = href;
      item.target = "_blank";
      item.rel = "noopener";
    }
    line.appendChild(item);
  }
  const body = document.createElement("div");
  body.className = "data";
  // Show the text of {"text": ...} messages; anything else as JSON.
  const text = (data as { text?: unknown } | null)?.text;
  body.textContent = typeof data === "string" ? data : typeof text === "string" ? text : JSON.stringify(data);
  li.append(line, body);
  log.prepend(li);
}

function showError(error: unknown): void {
  const code = error instanceof WsgateError ? error.code : "error";
  show("error", error instanceof Error ? error.message : String(error), [["error", code]]);
}

function received(message: Message): void {
  const meta: Meta[] = [
    ["time", new Date().toLocaleTimeString()],
    ["id", message.id],
  ];
  if (message.offset !== undefined) meta.push(["offset", String(message.offset)]);
  const trace = traceId(message.traceparent);
  if (trace) {
    const jaeger = config.jaegerUiUrl ? `${config.jaegerUiUrl.replace(/\/$/, "")}/trace/${trace}` : undefined;
    meta.push(["trace", trace, jaeger]);
  }
  show("message", message.data, meta);
}

function publish(text: string): void {
  client.publish(room, { text, from: "demo page" }).catch(showError);
}

function join(name: string): void {
  subscription?.unsubscribe();
  room = name;
  const current = client.subscribe(name, received, { recover: true });
  subscription = current;
  current.on("error", showError);
  current.on("resubscribed", ({ recovered }) => {
    if (!recovered) show("error", "messages may have been missed while disconnected", [["resubscribed", "recovered: false"]]);
  });
  current.ready.then(
    () => {
      roomLabel.textContent = `room: ${name}`;
      if (autopublish) {
        publish(autopublish);
        autopublish = null;
      }
    },
    showError,
  );
}

document.getElementById("publish")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const wanted = roomInput.value.trim();
  if (wanted && wanted !== room) join(wanted);
  if (textInput.value.trim()) {
    publish(textInput.value);
    textInput.value = "";
  }
});

join(room);
