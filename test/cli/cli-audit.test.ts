/**
 * `engine-store audit ...` and the operator the command line records (--actor, default the OS
 * user), end to end on a copy of the run's migrated embedded database.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { cli, migratedDataDirIn, type CliResult } from '../support/cli.ts';

vi.setConfig({ testTimeout: 180_000, hookTimeout: 180_000 });

describe('engine-store audit', () => {
  let root: string;
  let dataDir: string;
  const run = (args: string[]) => cli(['--data-dir', dataDir, ...args]);
  const json = (result: CliResult) => JSON.parse(result.stdout) as Record<string, unknown>;
  const jsonLines = (result: CliResult) =>
    result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { seq: number; action: string; actor: { kind: string; id: string } });

  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'engine-store-audit-'));
    dataDir = migratedDataDirIn(root);
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('records the operator of each command, lists and exports the trail, and anchors its head', async () => {
    const created = await run(['--actor', 'ops-carol', 'org', 'create', '--name', 'Audit Corp', '--json']);
    expect(created.code).toBe(0);
    const orgId = json(created).id as string;
    expect((await run(['org', 'suspend', orgId])).code).toBe(0);
    expect((await run(['org', 'activate', orgId])).code).toBe(0);
    expect((await run(['user', 'add', '--org', orgId, '--email', 'ada@audit.example', '--role', 'admin', '--actor', 'ops-dan'])).code).toBe(
      0,
    );

    const exported = await run(['audit', 'list', '--org', orgId, '--order', 'asc', '--json']);
    expect(exported.code).toBe(0);
    const osUser = userInfo().username.replace(/[^A-Za-z0-9._@+-]/g, '-');
    expect(jsonLines(exported).map((event) => `${event.seq} ${event.action} ${event.actor.kind}:${event.actor.id}`)).toEqual([
      '1 organization.created operator:ops-carol',
      `2 organization.suspended operator:${osUser}`,
      `3 organization.activated operator:${osUser}`,
      '4 user.created operator:ops-dan',
    ]);
    // An export resumes after the last seq it stored.
    const resumed = await run(['audit', 'list', '--org', orgId, '--order', 'asc', '--after', '2', '--json']);
    expect(jsonLines(resumed).map((event) => event.seq)).toEqual([3, 4]);
    const page = await run(['audit', 'list', '--org', orgId, '--limit', '2']);
    expect(page.stdout).toMatch(/^4 {2}\S+ {2}user\.created {2}by operator:ops-dan/m);
    expect(page.stdout).toMatch(/^more: --after 3$/m);

    const head = await run(['audit', 'head', '--org', orgId, '--json']);
    expect(head.code).toBe(0);
    const { hash, seq } = json(head) as { hash: string; seq: number };
    expect(seq).toBe(4);
    const holds = await run(['audit', 'verify', '--org', orgId, '--head', hash]);
    expect(holds.code).toBe(0);
    expect(holds.stdout).toMatch(/the chain holds head/);
    expect(holds.stdout).toMatch(/4 event\(s\) in 1 chain\(s\): ok/);
    const missing = await run(['audit', 'verify', '--org', orgId, '--head', 'cd'.repeat(32)]);
    expect(missing.code).toBe(9);
    expect(missing.stdout).toMatch(/does not hold head/);
    const everything = await run(['audit', 'verify', '--json']);
    expect(json(everything)).toMatchObject({ ok: true, findings: [] });
  });

  it('prunes by date or by the retention, which doctor asks for', async () => {
    const before = await run(['doctor', '--json']);
    expect((json(before).findings as { code: string }[]).map((finding) => finding.code)).toContain('AUDIT_RETENTION_NOT_SET');
    const noRetention = await run(['audit', 'prune']);
    expect(noRetention.code).toBe(2);
    expect(noRetention.stderr).toMatch(/no retention is configured/);
    const byDate = await run(['audit', 'prune', '--before', '2020-03-15', '--json']);
    expect(byDate.code).toBe(0);
    expect(json(byDate)).toMatchObject({ cut: '2020-03-01T00:00:00.000Z', eventsRemoved: 0, chainsCut: 0 });
    const set = await run(['audit', 'retention', '--days', '400']);
    expect(set.stdout).toBe('retention: 400 days\n');
    expect((await run(['audit', 'prune'])).code).toBe(0);
    const after = await run(['doctor', '--json']);
    expect((json(after).findings as { code: string }[]).map((finding) => finding.code)).not.toContain('AUDIT_RETENTION_NOT_SET');
  });

  it('checks every flag before opening the database', async () => {
    for (const [args, flag] of [
      [['audit', 'verify', '--head', 'xyz'], '--head'],
      [['audit', 'list', '--org', 'nope'], '--org'],
      [['audit', 'list', '--org', '00000000-0000-0000-0000-000000000000', '--since', 'yesterday'], '--since'],
      [['audit', 'list', '--org', '00000000-0000-0000-0000-000000000000', '--order', 'up'], '--order'],
      [['audit', 'list', '--org', '00000000-0000-0000-0000-000000000000', '--after', 'abc'], '--after'],
      [['audit', 'retention', '--days', '0'], '--days'],
      [['--actor', 'rm -rf', 'org', 'list'], '--actor'],
    ] as const) {
      const result = await cli([...args, '--data-dir', join(root, 'none'), '--json']);
      expect(result.code, args.join(' ')).toBe(2);
      expect(JSON.parse(result.stderr.trim().split('\n').at(-1)!).error.field).toBe(flag);
    }
  });
});
