// The environment list: every environment with owner, base, thin or full, state, ready count,
// expiry and whether it is updating; refreshed whenever an event arrives.
import { useEffect, useState } from "preact/hooks";

import { DocumentInfo, EnvStatus, api, streamEvents } from "./api";
import type { Who } from "./main";
import { readyCount, stateOf } from "./state";

export function EnvironmentList({ who }: { who: Who }) {
  const [envs, setEnvs] = useState<EnvStatus[]>([]);
  const [docs, setDocs] = useState<Record<string, DocumentInfo>>({});
  const [error, setError] = useState("");
  useEffect(() => {
    const ctl = new AbortController();
    let pending = false;
    const load = async () => {
      try {
        const [e, d] = await Promise.all([api.environments(), api.documents()]);
        setEnvs(e);
        setDocs(Object.fromEntries(d.map((x) => [x.name, x])));
        setError("");
      } catch (err) {
        setError(err instanceof Error ? err.message : String(err));
      }
    };
    load();
    // Bursts of events: one reload per animation frame at most.
    streamEvents(null, () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; load(); });
    }, ctl.signal);
    return () => ctl.abort();
  }, []);
  const invalid = Object.values(docs).filter((d) => d.error);
  return (
    <section>
      <h2>Environments</h2>
      {error && <p class="error" role="alert">{error}</p>}
      <table class="envs">
        <thead>
          <tr><th>environment</th><th>owner</th><th>base</th><th>kind</th><th>state</th><th>ready</th><th>expires</th></tr>
        </thead>
        <tbody>
          {envs.map((e) => {
            const d = docs[e.environment];
            const [ready, total] = readyCount(e);
            const state = stateOf(e);
            return (
              <tr key={e.environment} data-env={e.environment}>
                <td><a href={`#/env/${encodeURIComponent(e.environment)}`}>{e.environment}</a></td>
                <td>{d ? d.owner : <span class="muted">fleet</span>}</td>
                <td>{e.base ?? "—"}</td>
                <td>{d?.thin || e.apps.some((a) => a.runs_in !== e.environment) ? "thin" : "full"}</td>
                <td><span class={`state ${state}`}>{state}</span>{e.updating && <span class="state updating">updating</span>}</td>
                <td>{e.up ? `${ready}/${total}` : "—"}</td>
                <td>{d?.keep ? "kept" : d?.expires ?? "—"}</td>
              </tr>
            );
          })}
        </tbody>
      </table>
      {invalid.map((d) => (
        <p class="error" key={d.name}>{d.name} is left out: {d.error}</p>
      ))}
      {who.role !== "viewer" && <p><a class="button" href="#/create">New environment</a></p>}
    </section>
  );
}
