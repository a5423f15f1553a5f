/**
 * The other end of test/support/key-cache-process.ts: a forked process with a caching store of
 * its own, the messages it is sent and its replies, in order. Used by the key cache's tests and
 * by bench/key-cache.ts.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const PROCESS_SCRIPT = join(import.meta.dirname, 'key-cache-process.ts');

export interface Reply {
  ready?: true;
  outcomes?: string[];
  stats?: { permitsHeld: number; hits: number; leases: number; keys: number; state: string };
  watching?: true;
  refusedAt?: number;
  reason?: string;
  error?: string;
}

/** A process with a caching store, and the replies it sends, in order. */
export class CacheProcess {
  readonly #child: ChildProcess;
  readonly #replies: Reply[] = [];
  readonly #waiting: ((reply: Reply) => void)[] = [];
  #exited = false;

  /** `maxStalenessMs`: the cache's option (default 100). */
  constructor(url: string, maxStalenessMs = 100) {
    this.#child = fork(PROCESS_SCRIPT, [], {
      execArgv: ['--import', 'tsx'],
      env: { ...process.env, KEY_CACHE_DATABASE_URL: url, KEY_CACHE_MAX_STALENESS_MS: String(maxStalenessMs) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.#child.once('exit', () => (this.#exited = true));
    this.#child.on('message', (reply: Reply) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(reply);
      else this.#replies.push(reply);
    });
  }

  get exited(): boolean {
    return this.#exited;
  }

  next(): Promise<Reply> {
    const queued = this.#replies.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  async ask(message: object): Promise<Reply> {
    this.#child.send(message);
    const reply = await this.next();
    if (reply.error) throw new Error(`the cache process failed: ${reply.error}`);
    return reply;
  }

  send(message: object): void {
    this.#child.send(message);
  }

  kill(): Promise<void> {
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.kill('SIGKILL');
    return exited;
  }

  async close(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    this.#child.send({ close: true });
    await exited;
  }
}
