// Summaries of status objects shared by the pages.
import type { AppStatus, EnvStatus } from "./api";

// Apps this environment runs itself (a thin one's others fall through to its base).
export function ownApps(e: EnvStatus): AppStatus[] {
  return e.apps.filter((a) => a.runs_in === e.environment);
}

export function readyCount(e: EnvStatus): [number, number] {
  const own = ownApps(e);
  return [own.filter((a) => a.state === "ready").length, own.length];
}

// down | ready | starting | failing
export function stateOf(e: EnvStatus): string {
  if (!e.up) return "down";
  if (e.ready) return "ready";
  const own = ownApps(e);
  if (own.some((a) => /fail|crash|unhealthy/.test(a.state))) return "failing";
  return "starting";
}

// A colour class for an app or instance state.
export function tone(state: string): string {
  if (state === "ready" || state === "running") return "ok";
  if (state === "stopped" || state === "down" || state === "") return "off";
  if (/fail|crash|unhealthy|exited|error/.test(state)) return "bad";
  return "wait";
}
