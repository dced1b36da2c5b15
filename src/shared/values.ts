/**
 * Value parsing shared by busrtd and the busrt CLI: flags, environment variables and config file
 * values all go through these, so a bad value reads the same wherever it came from.
 */

/** A bad command line, environment variable or configuration value (exit code 2). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** Limits of a numeric option. */
export interface NumberRule {
  /** Only whole numbers. */
  integer?: boolean;
  /** Smallest accepted value (default 0). */
  min?: number;
  /** Largest accepted value. */
  max?: number;
  /** The value must be above `min`, not equal to it. */
  aboveMin?: boolean;
}

// Plain decimal only: Number() would also take "0x10", "1e3" and whitespace, which an operator
// would not expect from a flag.
const INTEGER = /^\d+$/;
const DECIMAL = /^(\d+(\.\d*)?|\.\d+)$/;

/** Parses a number from text or checks a number taken from JSON; throws UsageError. */
export function parseNumber(what: string, value: unknown, rule: NumberRule = {}): number {
  let v: number;
  if (typeof value === 'number') {
    v = value;
  } else if (typeof value === 'string' && (rule.integer ? INTEGER : DECIMAL).test(value)) {
    v = Number(value);
  } else {
    throw new UsageError(`${what}: expected ${rule.integer ? 'a whole number' : 'a number'}, got ${show(value)}`);
  }
  const min = rule.min ?? 0;
  if (!Number.isFinite(v) || (rule.integer && !Number.isInteger(v))) {
    throw new UsageError(`${what}: expected ${rule.integer ? 'a whole number' : 'a number'}, got ${show(value)}`);
  }
  if (v < min || (rule.aboveMin && v === min)) {
    throw new UsageError(`${what}: must be ${rule.aboveMin ? 'above' : 'at least'} ${min}, got ${show(value)}`);
  }
  if (rule.max !== undefined && v > rule.max) {
    throw new UsageError(`${what}: must be at most ${rule.max}, got ${show(value)}`);
  }
  return v;
}

/** Parses a yes/no value: 1/true/yes/on or 0/false/no/off (or a JSON boolean). */
export function parseFlag(what: string, value: unknown): boolean {
  if (typeof value === 'boolean') return value;
  if (typeof value === 'string') {
    const t = value.trim().toLowerCase();
    if (t === '1' || t === 'true' || t === 'yes' || t === 'on') return true;
    if (t === '0' || t === 'false' || t === 'no' || t === 'off' || t === '') return false;
  }
  throw new UsageError(`${what}: expected true or false, got ${show(value)}`);
}

/** A value quoted for a message. */
export function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/** The message of anything thrown. */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
