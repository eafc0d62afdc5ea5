/**
 * The real `wsgate` binary as a child process, as users run it: never a mock.
 * `WSGATE_BIN` names it; by default the workspace's debug build.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const DEFAULT_BIN = fileURLToPath(new URL("../../../../../target/debug/wsgate", import.meta.url));

export function gatewayBinary(): string {
  const bin = process.env.WSGATE_BIN ?? DEFAULT_BIN;
  if (!existsSync(bin)) {
    throw new Error(`no wsgate binary at ${bin}: run \`cargo build\` in the repository, or set WSGATE_BIN`);
  }
  return bin;
}

export class Gateway {
  private constructor(
    private child: ChildProcess,
    /** host:port */
    readonly addr: string,
    private readonly args: string[],
    private readonly env: Record<string, string>,
  ) {}

  /** Starts one (see `start`) that is stopped when the test `t` ends, passed or failed. */
  static async running(t: { after(fn: () => Promise<void>): void }, args: string[] = [], env: Record<string, string> = {}): Promise<Gateway> {
    const gateway = await Gateway.start(args, env);
    t.after(() => gateway.stop());
    return gateway;
  }

  /** Starts the gateway on `listen` (an ephemeral port by default) with `args` and `env` added. */
  static async start(args: string[] = [], env: Record<string, string> = {}, listen = "127.0.0.1:0"): Promise<Gateway> {
    const childEnv: Record<string, string> = {};
    for (const [key, value] of Object.entries(process.env)) {
      // The test decides the gateway's telemetry and settings.
      if (value !== undefined && !key.startsWith("OTEL_") && !key.startsWith("WSGATE_") && key !== "RUST_LOG") {
        childEnv[key] = value;
      }
    }
    Object.assign(childEnv, { OTEL_TRACES_EXPORTER: "none" }, env);
    const child = spawn(gatewayBinary(), ["--listen", listen, "--log-format", "json", ...args], {
      env: childEnv,
      stdio: ["ignore", "ignore", "pipe"],
    });
    const addr = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("wsgate did not log its address within 20 s")), 20_000);
      child.once("exit", (code) => reject(new Error(`wsgate exited with ${code} before listening`)));
      createInterface({ input: child.stderr! }).on("line", (line) => {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line);
        } catch {
          process.stderr.write(`wsgate (non-JSON): ${line}\n`);
          return;
        }
        const fields = entry.fields as Record<string, unknown> | undefined;
        if (fields?.message === "wsgate listening") {
          clearTimeout(timer);
          resolve(String(fields.addr));
        }
      });
    });
    return new Gateway(child, addr, args, env);
  }

  url(path = "/ws"): string {
    return `ws://${this.addr}${path}`;
  }

  httpUrl(path: string): string {
    return `http://${this.addr}${path}`;
  }

  /** Stops it with SIGTERM (connections are closed with 1001) and waits for the exit. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((resolve) => this.child.once("exit", resolve));
    this.child.kill("SIGTERM");
    await exited;
  }

  /** Freezes the process (SIGSTOP): its sockets stay open, but it answers nothing. Returns once it is stopped. */
  async pause(): Promise<void> {
    this.child.kill("SIGSTOP");
    // Signals arrive asynchronously: wait until Linux reports the process stopped ("T").
    await waitFor("the gateway stopped", () => readFileSync(`/proc/${this.child.pid}/stat`, "utf8").split(") ")[1]?.startsWith("T") ?? false);
  }

  resume(): void {
    this.child.kill("SIGCONT");
  }

  /** Stops it and starts the same gateway again on the same address: a restart, as in a deploy. */
  async restart(): Promise<void> {
    await this.stop();
    this.child = (await Gateway.start(this.args, this.env, this.addr)).child;
  }
}

/** Polls `ready` every 20 ms until it holds, failing after `ms`. */
export async function waitFor(what: string, ready: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Closes `thing` when the test ends, passed or failed: a client left open keeps the test process alive. */
export function closing<T extends { close(): Promise<void> }>(t: { after(fn: () => Promise<void>): void }, thing: T): T {
  t.after(() => thing.close());
  return thing;
}
