import { pino, type Logger, type LoggerOptions } from "pino";

export type { Logger };

export interface LoggerSettings {
  level: string;
  /** Pretty output for people; JSON otherwise. Default: pretty only on a terminal. */
  pretty?: boolean;
  name: string;
}

/**
 * One logger per process, shared with fastify. Prompts and completions are never logged:
 * request logs carry ids, models, status codes and timings only.
 */
export function createLogger(settings: LoggerSettings): Logger {
  const options: LoggerOptions = {
    name: settings.name,
    level: settings.level,
    redact: { paths: ["req.headers.authorization", "headers.authorization"], censor: "[redacted]" },
  };
  const pretty = settings.pretty ?? Boolean(process.stdout.isTTY);
  if (pretty) {
    return pino({ ...options, transport: { target: "pino-pretty", options: { colorize: true, destination: 1 } } });
  }
  return pino(options);
}
