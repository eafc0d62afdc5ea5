/**
 * `@wsgate/client`: the wsgate gateway's client for browsers and Node 18+.
 * See README.md for the API, reconnect and recovery semantics, and tracing.
 */
export { WsgateClient } from "./client.js";
export type { ClientEvents, ClientOptions, ConnectionState, PublishOptions } from "./options.js";
export { WsgateError } from "./errors.js";
export type { ClientErrorCode, ServerErrorCode, WsgateErrorCode } from "./errors.js";
export type { PublishResult } from "./publishes.js";
export { Subscription } from "./subscription.js";
export type { Message, MessageHandler, Resubscribed, SubscribeOptions, SubscriptionEvents } from "./subscription.js";
export type { TokenSource } from "./token.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport.js";
export { VERSION } from "./version.js";
