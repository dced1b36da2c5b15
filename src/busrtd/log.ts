import type { BrokerLogger } from '#busrt/core';
import { isRoutineBrokerLog } from '#busrt/core';

/** Where busrtd writes its log lines (stderr in production, a buffer in tests). */
export type LogSink = (line: string) => void;

/** busrtd's log: one line per event, `<ISO time> <LEVEL> <message>`, to stderr. */
export interface DaemonLog extends Required<BrokerLogger> {
  /** Lines an operator always wants (start, stop, reloads), whatever the verbosity. */
  notice(message: string): void;
}

/** Makes busrtd's logger; `verbose` adds connections, registrations and debug lines. */
export function makeDaemonLog(verbose: boolean, sink: LogSink = (l) => process.stderr.write(l)): DaemonLog {
  const line = (level: string, message: string): void => sink(`${new Date().toISOString()} ${level} ${message}\n`);
  return {
    debug: (m) => {
      if (verbose) line('DEBUG', m);
    },
    info: (m) => {
      // The broker reports connections at info level, like drops and timeouts. Without -v the
      // routine ones are left out so that what remains is worth reading.
      if (verbose || !isRoutineBrokerLog(m)) line('INFO', m);
    },
    notice: (m) => line('INFO', m),
    warn: (m) => line('WARN', m),
    error: (m) => line('ERROR', m),
  };
}
