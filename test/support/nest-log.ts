import type { LoggerService, LogLevel } from '@nestjs/common';
import { Waiters } from './waiters.js';

/** One line a Nest app logged. */
export interface LogEntry {
  level: LogLevel;
  /** The Logger's context (`BusrtServer`, `RoutesResolver`...), '' when none. */
  context: string;
  message: string;
}

/**
 * A Nest LoggerService that keeps every line (give it as the app's `logger`), so that a test can
 * assert on levels and order, and wait for a line instead of sleeping.
 */
export class CapturedLog implements LoggerService {
  readonly entries: LogEntry[] = [];
  private readonly waiters = new Waiters();

  log(message: unknown, ...rest: unknown[]): void {
    this.add('log', message, rest);
  }
  error(message: unknown, ...rest: unknown[]): void {
    this.add('error', message, rest);
  }
  warn(message: unknown, ...rest: unknown[]): void {
    this.add('warn', message, rest);
  }
  debug(message: unknown, ...rest: unknown[]): void {
    this.add('debug', message, rest);
  }
  verbose(message: unknown, ...rest: unknown[]): void {
    this.add('verbose', message, rest);
  }
  fatal(message: unknown, ...rest: unknown[]): void {
    this.add('fatal', message, rest);
  }

  /** The lines of `context` (every context when absent), as `LEVEL message`. */
  lines(context?: string): string[] {
    return this.entries
      .filter((e) => context === undefined || e.context === context)
      .map((e) => `${e.level.toUpperCase()} ${e.message}`);
  }

  /** Waits for a line that satisfies `test`; rejects after `ms` with what was logged. */
  waitFor(test: (e: LogEntry) => boolean, what: string, ms = 5000): Promise<LogEntry> {
    return this.waiters.wait(
      () => this.entries.find(test),
      ms,
      () => `no log line ${what}; logged:\n${this.lines().join('\n')}`,
    );
  }

  private add(level: LogLevel, message: unknown, rest: unknown[]): void {
    // Nest's Logger passes its context as the last parameter.
    const last = rest.at(-1);
    this.entries.push({ level, context: typeof last === 'string' ? last : '', message: String(message) });
    this.waiters.wake();
  }
}
