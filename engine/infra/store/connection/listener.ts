/**
 * One connection of its own that LISTENs on a channel (PostgreSQL only), for a cache that must
 * hear about changes: notifications come through `notification`, and the loss of the connection
 * through `lost`, once, whatever the cause (the server closed it, the socket broke, a ping went
 * unanswered). The listener never reconnects by itself: its owner decides what a loss means (the
 * key cache forgets everything) and opens another.
 */
import pg from 'pg';
import type { ConnectionOptions } from 'node:tls';
import { StoreError } from '../errors.ts';

export const LISTENER_APPLICATION_NAME = 'engine-store listener';

export interface ListenHandlers {
  notification(payload: string): void;
  lost(error: unknown): void;
}

export interface Listener {
  /**
   * A round trip on the listening connection. The server delivers the notifications it holds
   * for a session before it answers that session's next statement, so once this resolves, every
   * notification committed before it was sent has reached `notification`. Unanswered within
   * `deadlineMs`, the connection is given up: this rejects, and `lost` is called.
   */
  ping(deadlineMs: number): Promise<void>;
  close(): Promise<void>;
}

export interface ListenerOptions {
  connectTimeoutMs: number;
  ssl?: boolean | ConnectionOptions;
}

export async function openListener(url: string, channel: string, handlers: ListenHandlers, options: ListenerOptions): Promise<Listener> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: options.connectTimeoutMs,
    // A peer that vanished without closing (a partition) is found by the pings; keepalive is
    // only the kernel's backstop for an idle socket.
    keepAlive: true,
    // So that an operator can tell it apart in pg_stat_activity.
    application_name: LISTENER_APPLICATION_NAME,
    ...(options.ssl === undefined ? {} : { ssl: options.ssl }),
  });
  let closing = false;
  let gone = false;
  const lose = (error: unknown): void => {
    if (gone || closing) return;
    gone = true;
    // Destroyed, not ended: a socket that stopped answering would never finish a polite close.
    (client as unknown as { connection: { stream: { destroy(): void } } }).connection.stream.destroy();
    handlers.lost(error);
  };
  client.on('error', lose);
  client.on('end', () => lose(new StoreError('CONNECTION_LOST', 'the listening connection was closed')));
  client.on('notification', (message) => {
    if (!gone && message.channel === channel) handlers.notification(message.payload ?? '');
  });
  try {
    await client.connect();
    await client.query(`listen ${pg.escapeIdentifier(channel)}`);
  } catch (error) {
    closing = true;
    await client.end().catch(() => undefined);
    throw error;
  }
  return {
    async ping(deadlineMs) {
      if (gone) throw new StoreError('CONNECTION_LOST', 'the listening connection was lost');
      let timer: ReturnType<typeof setTimeout> | undefined;
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => {
          const error = new StoreError('TIMEOUT', `the listening connection did not answer within ${deadlineMs} ms`, {
            reason: 'client_deadline',
          });
          lose(error);
          reject(error);
        }, deadlineMs);
      });
      try {
        await Promise.race([client.query('select 1'), deadline]);
      } catch (error) {
        lose(error);
        throw error;
      } finally {
        clearTimeout(timer);
      }
    },
    async close() {
      if (closing) return;
      closing = true;
      if (gone) return;
      await client.end().catch(() => undefined);
    },
  };
}
