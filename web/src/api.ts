// The daemon's REST API as the page uses it (formats: docs/api.md). The token lives in
// sessionStorage and goes in the Authorization header only — no cookie, so another site's page
// cannot make the browser send it (and the daemon refuses other origins anyway).

const TOKEN_KEY = "berth.token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}
export function setToken(t: string | null): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public details: string[] = [],
  ) {
    super(message);
  }
}

export interface Instance {
  ordinal: number;
  ip: string;
  dns: string;
  state: string;
  health: string;
  restarts: number;
  message: string;
  pid: number | null;
}
export interface AppStatus {
  app: string;
  runs_in: string;
  tag: string;
  build_type: string;
  from: Record<string, string>;
  state: string;
  message: string;
  waiting_for: string[];
  depends_on: { app: string; soft: boolean }[];
  instances: Instance[];
  build?: { commit: string | null; state: string; error: string };
  database?: { standard: string; version: number | null };
}
export interface EnvStatus {
  environment: string;
  base: string | null;
  up: boolean;
  ready: boolean;
  updating: boolean;
  notes: string[];
  apps: AppStatus[];
}
export interface DocumentInfo {
  name: string;
  owner: string;
  version: number;
  updated_at: string | null;
  updated_by: string;
  error: string | null;
  base?: string | null;
  thin?: boolean;
  editors?: string[];
  expires?: string | null;
  keep?: boolean;
  text?: string;
}
export interface BerthEvent {
  id: number;
  time: string;
  type: string;
  app: string | null;
  ordinal: number | null;
  ip: string | null;
  message: string;
}
export interface Difference {
  app: string;
  setting: string;
  value: unknown;
  from: string | null;
  against_value: unknown;
  against_from: string | null;
}

async function call<T>(method: string, path: string, body?: unknown, ifMatch?: number): Promise<T> {
  const headers: Record<string, string> = {};
  const t = token();
  if (t) headers["Authorization"] = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (ifMatch) headers["If-Match"] = `"${ifMatch}"`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, json.error ?? `HTTP ${res.status}`, json.details ?? []);
  return json as T;
}

export const api = {
  whoami: () => call<{ user: string; role: string; token: string }>("GET", "/v1/whoami"),
  environments: () => call<EnvStatus[]>("GET", "/v1/environments"),
  environment: (e: string) => call<EnvStatus>("GET", `/v1/environments/${encodeURIComponent(e)}`),
  documents: () => call<DocumentInfo[]>("GET", "/v1/documents"),
  document: (e: string) => call<DocumentInfo>("GET", `/v1/environments/${encodeURIComponent(e)}/document`),
  putDocument: (e: string, text: string, version: number) =>
    call<DocumentInfo>("PUT", `/v1/environments/${encodeURIComponent(e)}/document`, { text }, version),
  create: (body: { name: string; base: string; thin: boolean; set: Record<string, string>; ttl?: string }) =>
    call<DocumentInfo>("POST", "/v1/environments", body),
  remove: (e: string, version: number) =>
    call<{ notes: string[] }>("DELETE", `/v1/environments/${encodeURIComponent(e)}/document`, undefined, version),
  diff: (e: string) => call<{ against: string; differences: Difference[] }>("GET", `/v1/environments/${encodeURIComponent(e)}/diff`),
  events: (e: string, after = 0) =>
    call<BerthEvent[]>("GET", `/v1/environments/${encodeURIComponent(e)}/events?after=${after}&limit=1000`),
  action: (e: string, what: "up" | "down" | "refresh") =>
    call<{ events_after: number }>("POST", `/v1/environments/${encodeURIComponent(e)}/${what}`),
  cloneDb: (e: string, db: string) =>
    call<{ events_after: number }>("POST", `/v1/environments/${encodeURIComponent(e)}/databases/${encodeURIComponent(db)}/reset`),
  log: (e: string, app: string, n: number, offset?: number) =>
    call<{ text: string; offset: number }>(
      "GET",
      `/v1/environments/${encodeURIComponent(e)}/apps/${encodeURIComponent(app)}/instances/${n}/log` +
        (offset === undefined ? "" : `?offset=${offset}`),
    ),
};

// The event stream (text/event-stream) read with fetch, so it can carry the Authorization
// header (EventSource cannot). Calls `on` per event until `signal` aborts; reconnects after a
// second, from the last id seen, if the stream ends.
export async function streamEvents(env: string | null, on: (e: BerthEvent) => void, signal: AbortSignal): Promise<void> {
  let after = 0;
  while (!signal.aborted) {
    try {
      const q = new URLSearchParams();
      if (env) q.set("env", env);
      if (after) q.set("after", String(after));
      const res = await fetch(`/v1/events/stream?${q}`, {
        headers: { Authorization: `Bearer ${token() ?? ""}`, Accept: "text/event-stream" },
        signal,
      });
      if (!res.ok || !res.body) throw new ApiError(res.status, `event stream: HTTP ${res.status}`);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end: number;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const frame = buf.slice(0, end);
          buf = buf.slice(end + 2);
          for (const line of frame.split("\n"))
            if (line.startsWith("data: ")) {
              const e = JSON.parse(line.slice(6)) as BerthEvent;
              after = Math.max(after, e.id);
              on(e);
            }
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof ApiError && (err.status === 401 || err.status === 403 || err.status === 404)) return;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
