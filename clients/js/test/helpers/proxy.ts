/**
 * A TCP proxy in front of the gateway whose connections the test can cut: a
 * network drop, with the gateway (and its history) still running.
 */
import { createConnection, createServer, type Server, type Socket } from "node:net";

export class Proxy {
  private constructor(
    private readonly server: Server,
    readonly addr: string,
    private readonly sockets: Set<Socket>,
  ) {}

  static async start(target: string): Promise<Proxy> {
    const [host, port] = splitAddr(target);
    const sockets = new Set<Socket>();
    const server = createServer((client) => {
      const upstream = createConnection({ host, port });
      for (const socket of [client, upstream]) {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
        socket.on("error", () => undefined);
      }
      client.pipe(upstream).pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("the proxy has no port");
    return new Proxy(server, `127.0.0.1:${address.port}`, sockets);
  }

  url(path = "/ws"): string {
    return `ws://${this.addr}${path}`;
  }

  /** Drops every connection through it, both ways, without a close frame. */
  cut(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function splitAddr(addr: string): [string, number] {
  const index = addr.lastIndexOf(":");
  return [addr.slice(0, index), Number(addr.slice(index + 1))];
}
