/** The gateway's frames as the client reads them (docs/protocol.md, "Server → client"). */

/** A frame from the gateway: the fields of every type (docs/protocol.md), each optional. */
export interface Frame {
  type: string;
  room?: string;
  id?: string;
  data?: unknown;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  traceparent?: string;
  exp?: number;
  code?: string;
  message?: string;
}
export interface MessageFrame extends Frame {
  room: string;
  id: string;
}
