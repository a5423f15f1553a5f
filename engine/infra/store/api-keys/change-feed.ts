/**
 * Hearing every change a key cache depends on, with proof (the key cache's listening half; see
 * key-cache.ts).
 *
 * The changes are NOTIFYs on KEY_CACHE_CHANNEL, sent by triggers with the change's commit
 * (migration 20261128160000), heard on a connection of the feed's own. Proof: every quarter of
 * `maxStalenessMs`, a ping goes to that connection. A server delivers the notifications it holds
 * for a session before it answers that session's next statement, so once the ping is answered,
 * every change committed before it was sent has been heard. `proven(now)` says whether that
 * happened within `maxStalenessMs`. A lost connection, or one that does not answer within ten
 * times that (at least 1 s), is given up: `lost` is reported, and the feed connects again with
 * back-off, reporting `connected`.
 *
 * Not on Citus: a trigger there runs on the node of its row, where a NOTIFY reaches only that
 * node's listeners, and Citus commits a write to several nodes (any write to a reference table
 * such as organizations) with two-phase commit, which PostgreSQL refuses for a transaction that
 * has sent NOTIFY ("cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY").
 * The distribute command drops the triggers there, and the store refuses keyCache.
 */
import type { Database } from '../connection/database.ts';
import type { Listener } from '../connection/listener.ts';

export const KEY_CACHE_CHANNEL = 'engine_store_key_cache';

export interface ChangeFeedEvents {
  notification(payload: string): void;
  /** Listening again: what was read before may have missed a change. */
  connected(): void;
  /** Not listening any more (the connection lost): nothing can be vouched for. */
  lost(): void;
}

export class ChangeFeed {
  #state: 'connecting' | 'listening' | 'stopped' = 'connecting';
  #listener: Listener | undefined;
  /** Counts the connections, so that a late event of an old one is ignored. */
  #generation = 0;
  /** performance.now() when the last answered ping was sent. */
  #provenAt = -Infinity;
  #pinging = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #reconnect: ReturnType<typeof setTimeout> | undefined;
  #backoffMs = 0;

  private constructor(
    private readonly db: Database,
    private readonly maxStalenessMs: number,
    private readonly events: ChangeFeedEvents,
  ) {}

  /** A feed listening already: a login that cannot LISTEN fails here, not later. */
  static async open(db: Database, maxStalenessMs: number, events: ChangeFeedEvents): Promise<ChangeFeed> {
    const feed = new ChangeFeed(db, maxStalenessMs, events);
    await feed.#connect();
    feed.#heartbeat = setInterval(() => void feed.#ping(), Math.max(5, Math.floor(maxStalenessMs / 4)));
    feed.#heartbeat.unref();
    return feed;
  }

  get listening(): boolean {
    return this.#state === 'listening';
  }

  /** Whether every change committed up to `maxStalenessMs` before `now` has been heard. */
  proven(now: number): boolean {
    return this.#state === 'listening' && now - this.#provenAt <= this.maxStalenessMs;
  }

  async stop(): Promise<void> {
    this.#state = 'stopped';
    this.#generation += 1;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#reconnect);
    const listener = this.#listener;
    this.#listener = undefined;
    await listener?.close();
  }

  async #connect(): Promise<void> {
    const generation = ++this.#generation;
    const listener = await this.db.listen(KEY_CACHE_CHANNEL, {
      notification: (payload) => {
        if (this.#generation === generation) this.events.notification(payload);
      },
      lost: () => {
        if (this.#generation === generation) this.#lose();
      },
    })!;
    if (this.#state === 'stopped' || this.#generation !== generation) {
      await listener.close();
      return;
    }
    this.#listener = listener;
    this.#provenAt = performance.now();
    this.#state = 'listening';
    this.#backoffMs = 0;
    this.events.connected();
  }

  #lose(): void {
    if (this.#state !== 'listening') return;
    this.#state = 'connecting';
    this.#generation += 1;
    void this.#listener?.close();
    this.#listener = undefined;
    this.events.lost();
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    this.#backoffMs = Math.min(2_000, Math.max(50, this.#backoffMs * 2));
    this.#reconnect = setTimeout(() => {
      this.#connect().catch(() => {
        if (this.#state === 'connecting') this.#scheduleReconnect();
      });
    }, this.#backoffMs);
    this.#reconnect.unref();
  }

  async #ping(): Promise<void> {
    const listener = this.#listener;
    if (this.#pinging || this.#state !== 'listening' || listener === undefined) return;
    this.#pinging = true;
    const sentAt = performance.now();
    try {
      // Past maxStalenessMs the feed is already out of use; this long, the connection is given up.
      await listener.ping(Math.max(1_000, this.maxStalenessMs * 10));
      if (this.#listener === listener) this.#provenAt = sentAt;
    } catch {
      // The listener reported its loss itself.
    } finally {
      this.#pinging = false;
    }
  }
}
