// One environment: actions (up, down, refresh, database clone, delete), the seed's table of
// app_code / tag / build_type with the layer of each and a mark where it differs from the base,
// each app's instances (live: reloaded on every event of the environment), the dependency
// graph coloured by state with why an app waits, the diff against the base, the events
// timeline and an instance's log tail.
import { useEffect, useRef, useState } from "preact/hooks";

import { AppStatus, BerthEvent, Difference, DocumentInfo, EnvStatus, api, streamEvents } from "./api";
import type { Who } from "./main";
import { readyCount, stateOf, tone } from "./state";

function layer(from: string | undefined): string {
  if (!from) return "";
  const m = from.match(/^environments\.([^.]+)(\.apps\.[^.]+)?$/);
  if (m) return m[1];
  if (from.startsWith("apps.")) return "fleet app";
  return from;  // defaults, built-in
}

function Graph({ env }: { env: EnvStatus }) {
  // Columns by depth: an app sits one column right of its deepest dependency.
  const byName = Object.fromEntries(env.apps.map((a) => [a.app, a]));
  const depth: Record<string, number> = {};
  const depthOf = (a: string, seen = new Set<string>()): number => {
    if (depth[a] !== undefined) return depth[a];
    if (seen.has(a)) return 0;
    seen.add(a);
    const deps = byName[a]?.depends_on ?? [];
    return (depth[a] = deps.length ? 1 + Math.max(...deps.map((d) => depthOf(d.app, seen))) : 0);
  };
  env.apps.forEach((a) => depthOf(a.app));
  const columns: AppStatus[][] = [];
  for (const a of env.apps) (columns[depth[a.app]] ??= []).push(a);
  return (
    <div class="graph" aria-label="dependency graph">
      {columns.map((col, i) => (
        <div class="column" key={i}>
          {col.map((a) => (
            <div class={`node ${a.runs_in === env.environment ? tone(a.state) : "through"}`} key={a.app} data-app={a.app}
                 title={a.message}>
              <strong>{a.app}</strong>
              <span>{a.runs_in === env.environment ? a.state : `→ ${a.runs_in}`}</span>
              {a.depends_on.length > 0 && (
                <small>needs {a.depends_on.map((d) => d.app + (d.soft ? " (soft)" : "")).join(", ")}</small>
              )}
              {a.waiting_for.length > 0 && <small class="why">waiting for {a.waiting_for.join(", ")}: {a.message}</small>}
            </div>
          ))}
        </div>
      ))}
    </div>
  );
}

function LogTail({ env, app, ordinal, onClose }: { env: string; app: string; ordinal: number; onClose: () => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState("");
  const pre = useRef<HTMLPreElement>(null);
  useEffect(() => {
    let offset: number | undefined;
    let alive = true;
    let timer = 0;
    const next = async () => {
      try {
        const r = await api.log(env, app, ordinal, offset);
        if (!alive) return;
        offset = r.offset;
        if (r.text) setText((t) => (t + r.text).slice(-200_000));
      } catch (err) {
        setError(err instanceof Error ? err.message : String(err));
      }
      if (alive) timer = window.setTimeout(next, 1000);  // following: new output each second
    };
    next();
    return () => { alive = false; clearTimeout(timer); };
  }, [env, app, ordinal]);
  useEffect(() => { pre.current?.scrollTo(0, pre.current.scrollHeight); }, [text]);
  return (
    <div class="log">
      <h3>{app}#{ordinal} log <button class="link" onClick={onClose}>close</button></h3>
      {error && <p class="error">{error}</p>}
      <pre ref={pre} aria-label="log">{text}</pre>
    </div>
  );
}

// The environment's own YAML, written back with the version it was read at: a change made
// meanwhile is refused (409, naming who), errors come back located in the document.
function EditDocument({ name, doc, onSaved }: { name: string; doc: DocumentInfo; onSaved: (d: DocumentInfo) => void }) {
  const [text, setText] = useState(doc.text ?? "");
  const [error, setError] = useState<{ message: string; details: string[] } | null>(null);
  const save = async (e: Event) => {
    e.preventDefault();
    try {
      onSaved(await api.putDocument(name, text, doc.version));
    } catch (err) {
      setError({ message: err instanceof Error ? err.message : String(err), details: (err as { details?: string[] }).details ?? [] });
    }
  };
  return (
    <form class="edit" onSubmit={save}>
      <p class="muted">environments/{name}.yaml, version {doc.version}: the keys of an environment in berth.yaml, plus
        expires, keep and editors. Secrets show as •••• and keep their values.</p>
      <textarea name="text" rows={16} spellcheck={false} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
      {error && (
        <div class="error" role="alert">{error.message}
          {error.details.length > 1 && <ul>{error.details.map((d) => <li key={d}>{d}</li>)}</ul>}
        </div>
      )}
      <button type="submit">Save</button>
    </form>
  );
}

export function EnvironmentPage({ name, who }: { name: string; who: Who }) {
  const [env, setEnv] = useState<EnvStatus | null>(null);
  const [doc, setDoc] = useState<DocumentInfo | null>(null);
  const [diff, setDiff] = useState<Difference[]>([]);
  const [events, setEvents] = useState<BerthEvent[]>([]);
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [log, setLog] = useState<{ app: string; ordinal: number } | null>(null);
  const [tab, setTab] = useState<"apps" | "graph" | "diff" | "events" | "edit">("apps");

  const load = async () => {
    try {
      const e = await api.environment(name);
      setEnv(e);
      setError("");
      if (e.base) api.diff(name).then((d) => setDiff(d.differences)).catch(() => setDiff([]));
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  useEffect(() => {
    const ctl = new AbortController();
    setEvents([]);
    load();
    api.document(name).then(setDoc).catch(() => setDoc(null));
    api.events(name).then((list) => setEvents(list.slice(-200)));
    let pending = false;
    streamEvents(name, (e) => {
      setEvents((list) => (list.some((x) => x.id === e.id) ? list : [...list, e].slice(-200)));
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; load(); });
    }, ctl.signal);
    return () => ctl.abort();
  }, [name]);

  const act = async (what: "up" | "down" | "refresh") => {
    try {
      await api.action(name, what);
      setNotice(`${what} requested`);
      setError("");
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const cloneDb = async (db: string) => {
    try {
      await api.cloneDb(name, db);
      setNotice(`a fresh copy of ${db} is being made`);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  const remove = async () => {
    if (!doc || !confirm(`Delete ${name}? It is taken down and its database copies are removed.`)) return;
    try {
      await api.remove(name, doc.version);
      location.hash = "#/";
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  };

  if (!env) return <section>{error ? <p class="error" role="alert">{error}</p> : <p>loading…</p>}</section>;
  const [ready, total] = readyCount(env);
  const differs = new Set(diff.map((d) => `${d.app}.${d.setting}`));
  // Buttons stay for viewers too: the daemon decides, and its refusal is shown.
  return (
    <section>
      <h2>
        {env.environment} <span class={`state ${stateOf(env)}`}>{stateOf(env)}</span>
        {env.updating && <span class="state updating">updating</span>}
      </h2>
      <p class="meta">
        {env.base ? <>base <a href={`#/env/${encodeURIComponent(env.base)}`}>{env.base}</a> · </> : null}
        {doc ? <>owner {doc.owner === who.user ? "you" : doc.owner} · version {doc.version} · {doc.keep ? "kept" : doc.expires ? `expires ${doc.expires}` : "no expiry"}</> : "fleet environment"}
        {env.up && <> · {ready}/{total} apps ready</>}
      </p>
      <div class="actions">
        <button onClick={() => act("up")}>Up</button>
        <button onClick={() => act("down")}>Down</button>
        <button onClick={() => act("refresh")}>Refresh</button>
        {doc && <a class="button" href={`#/create/${encodeURIComponent(name)}`}>New based on it</a>}
        {doc && <button class="danger" onClick={remove}>Delete</button>}
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {notice && !error && <p class="notice">{notice}</p>}
      {env.notes.map((n) => <p class="notice" key={n}>{n}</p>)}
      <nav class="tabs">
        {(["apps", "graph", "diff", "events", ...(doc ? (["edit"] as const) : [])] as const).map((t) => (
          <button key={t} class={tab === t ? "active" : ""} onClick={() => setTab(t)}>{t}</button>
        ))}
      </nav>
      {tab === "apps" && (
        <table class="apps">
          <thead>
            <tr><th>app_code</th><th>tag</th><th>from</th><th>build_type</th><th>from</th><th>state</th><th>instances</th><th></th></tr>
          </thead>
          <tbody>
            {env.apps.map((a) => (
              <tr key={a.app} data-app={a.app}>
                <td>{a.app}{a.runs_in !== env.environment && <span class="muted"> → {a.runs_in}</span>}</td>
                <td class={differs.has(`${a.app}.tag`) ? "differs" : ""}>{a.tag}{a.build?.commit && <span class="muted"> {a.build.commit.slice(0, 7)}</span>}</td>
                <td class="layer">{layer(a.from.tag)}</td>
                <td class={differs.has(`${a.app}.build_type`) ? "differs" : ""}>{a.build_type}</td>
                <td class="layer">{layer(a.from.build_type)}</td>
                <td><span class={`state ${tone(a.state)}`} data-state={a.state}>{a.state}</span>
                  {a.message && <div class="muted small">{a.message}</div>}</td>
                <td>
                  {a.runs_in === env.environment && a.instances.map((i) => (
                    <div class="instance" key={i.ordinal} data-ordinal={i.ordinal}>
                      <span class={`dot ${tone(i.state)}`} title={i.state} />
                      <code>{i.ip}</code> <span class="muted">{i.dns}</span> {i.state}
                      {i.restarts > 0 && <span class="muted"> · {i.restarts} restarts</span>}
                      {i.health && <div class="muted small">{i.health}</div>}
                      <button class="link" onClick={() => setLog({ app: a.app, ordinal: i.ordinal })}>log</button>
                    </div>
                  ))}
                </td>
                <td>{a.database !== undefined &&
                  <button onClick={() => cloneDb(a.app)}>Clone database</button>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {tab === "graph" && <Graph env={env} />}
      {tab === "diff" && (
        diff.length === 0 ? <p>{env.base ? `no setting differs from ${env.base}` : "no base to compare with"}</p> : (
          <table class="diff">
            <thead><tr><th>app</th><th>setting</th><th>{env.environment}</th><th>from</th><th>{env.base}</th><th>from</th></tr></thead>
            <tbody>
              {diff.map((d) => (
                <tr key={`${d.app}.${d.setting}`}>
                  <td>{d.app}</td><td>{d.setting}</td><td>{String(d.value ?? "—")}</td><td class="layer">{layer(d.from ?? "")}</td>
                  <td>{String(d.against_value ?? "—")}</td><td class="layer">{layer(d.against_from ?? "")}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
      {tab === "events" && (
        <ol class="events" aria-label="events">
          {[...events].reverse().map((e) => (
            <li key={e.id} class={tone(e.type)}>
              <time>{e.time.slice(11, 23)}</time> <strong>{e.type}</strong> {e.app ?? ""}{e.ordinal !== null ? `#${e.ordinal}` : ""} {e.message}
            </li>
          ))}
        </ol>
      )}
      {tab === "edit" && doc && <EditDocument name={name} doc={doc} onSaved={(d) => { setDoc(d); setTab("apps"); load(); }} />}
      {log && <LogTail env={name} app={log.app} ordinal={log.ordinal} onClose={() => setLog(null)} />}
    </section>
  );
}
