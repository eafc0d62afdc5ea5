/**
 * Requests whose replies carry no `id` (subscribe, unsubscribe, refresh),
 * matched by order: the gateway handles a connection's frames one at a time
 * and answers them in order, so an error without an `id` answers the oldest
 * request still waiting. Each request remembers the sequence number of its
 * frame on the connection, so that a barrier (a `ping` whose `pong` comes
 * back) can tell which ones the gateway's rate limit dropped unanswered.
 */
import type { Room } from "./subscription.js";

export type Request =
  | { kind: "subscribe" | "unsubscribe"; room: Room; seq: number }
  | { kind: "refresh"; token: string; seq: number }
  /** The gateway left a room for us (`unsubscribed` unasked); the error frame that follows says why. */
  | { kind: "dropped"; room: Room; seq: number };

export class Requests {
  private queue: Request[] = [];

  push(request: Request): void {
    this.queue.push(request);
  }

  /** An unasked `unsubscribed`: its error frame comes next, before any other answer. */
  pushFront(request: Request): void {
    this.queue.unshift(request);
  }

  /** The oldest waiting request matching `match`, taken off the queue. */
  take(match: (request: Request) => boolean): Request | undefined {
    const index = this.queue.findIndex(match);
    return index < 0 ? undefined : this.queue.splice(index, 1)[0];
  }

  /** The oldest waiting request: the one an error without an `id` answers. */
  shift(): Request | undefined {
    return this.queue.shift();
  }

  /**
   * The requests sent before frame `seq` still waiting once the gateway has
   * answered frame `seq`: it dropped them (rate limit). They are taken off.
   */
  unansweredBefore(seq: number): Request[] {
    const dropped = this.queue.filter((r) => r.seq < seq);
    this.queue = this.queue.filter((r) => r.seq >= seq);
    return dropped;
  }

  /** The oldest waiting request, left in place. */
  peek(): Request | undefined {
    return this.queue[0];
  }

  clear(): void {
    this.queue = [];
  }
}
