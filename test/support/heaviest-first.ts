/**
 * The order test files start in. Two workers share the run; a long file that starts late ends
 * the run alone. Vitest orders by the durations of the previous run, but CI runs a fresh clone,
 * which has none, and then orders by file size. These files take the longest (about 130, 60,
 * 55, 35 and 30 s of a 4.5-minute run on two cores): they start first, in this order, and the
 * rest fill in beside them in vitest's own order.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const HEAVIEST = [
  'test/cli/cli.test.ts',
  'test/tenancy/isolation.test.ts',
  'test/migrator/migration-crash.test.ts',
  'test/connection/data-dir.test.ts',
  'test/diagnostics/doctor.test.ts',
];

function rank(file: TestSpecification): number {
  const index = HEAVIEST.findIndex((heavy) => file.moduleId.endsWith(heavy));
  return index === -1 ? HEAVIEST.length : index;
}

export default class HeaviestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    // Array.prototype.sort is stable: the rest keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b));
  }
}
