/**
 * A process of its own with a store whose key cache is on, driven by the test that forked it
 * (test/api-keys/key-cache-processes.test.ts) through IPC: the cache's guarantees are about
 * several processes, each with its own memory and its own listening connection.
 *
 * Messages in: { verify: key, times } runs `times` verifications at once and answers with their
 * outcomes; { watch: key } verifies again and again, yielding to I/O between tries, until the key
 * is refused, and answers with the wall-clock time it saw that (performance.timeOrigin based);
 * { stats: true } answers with the cache's stats; { close: true } closes the store and exits.
 */
import { openStore } from '../../engine/infra/store/index.ts';

type Message = { verify: string; times: number } | { watch: string } | { stats: true } | { close: true };

const store = await openStore({
  url: process.env.KEY_CACHE_DATABASE_URL!,
  keyCache: { maxKeys: 100, maxStalenessMs: Number(process.env.KEY_CACHE_MAX_STALENESS_MS ?? 100) },
  verifyPoolSize: 4,
});

const send = (message: unknown) => process.send!(message);

process.on('message', (message: Message) => {
  void (async () => {
    if ('verify' in message) {
      const results = await Promise.all(Array.from({ length: message.times }, () => store.verifyApiKey(message.verify)));
      send({ outcomes: results.map((result) => (result.ok ? 'OK' : result.reason)), stats: store.keyCache!.stats() });
    } else if ('watch' in message) {
      send({ watching: true });
      for (;;) {
        const result = await store.verifyApiKey(message.watch);
        if (!result.ok) {
          send({ refusedAt: performance.timeOrigin + performance.now(), reason: result.reason });
          return;
        }
        // A server's requests arrive by I/O: the loop gives notifications their turn as they
        // would. A millisecond apart, so that four such loops do not take both cores from the
        // database that sends the notifications.
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
    } else if ('stats' in message) {
      send({ stats: store.keyCache!.stats() });
    } else {
      await store.close();
      process.exit(0);
    }
  })().catch((error: unknown) => {
    send({ error: String(error) });
  });
});

send({ ready: true });
