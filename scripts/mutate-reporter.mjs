// A Stryker reporter (stryker.config.mjs) that appends each tested mutant to a JSON-lines file as
// soon as it is known, so that a long run stopped before its end still tells what it found
// (scripts/mutate.mjs sums that file up when the run's own report is missing).
import { appendFileSync, writeFileSync } from 'node:fs';
import { relative } from 'node:path';
import { commonTokens, declareClassPlugin, PluginKind } from '@stryker-mutator/api/plugin';

class PartialReporter {
  static inject = [commonTokens.options];

  constructor(options) {
    // Beside the run's JSON report: reports/mutation/<scope>.partial.jsonl.
    this.file = options.jsonReporter.fileName.replace(/\.json$/, '.partial.jsonl');
    writeFileSync(this.file, '');
  }

  onMutantTested(m) {
    const line = {
      fileName: relative(process.cwd(), m.fileName),
      id: m.id,
      mutatorName: m.mutatorName,
      replacement: m.replacement,
      location: m.location,
      status: m.status,
      killedBy: m.killedBy,
      testsCompleted: m.testsCompleted,
    };
    appendFileSync(this.file, `${JSON.stringify(line)}\n`);
  }
}

export const strykerPlugins = [declareClassPlugin(PluginKind.Reporter, 'partial', PartialReporter)];
