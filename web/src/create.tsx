// The form to create an environment: a name, a base, thin or full, a lifetime, and per app the
// tag (branch) and build_type — left empty, a setting comes from the base.
import { useEffect, useState } from "preact/hooks";

import { EnvStatus, api } from "./api";
import type { Who } from "./main";

const TTLS = ["", "1d", "3d", "7d", "14d"];

export function CreateEnvironment({ who, base: initialBase }: { who: Who; base?: string }) {
  const [envs, setEnvs] = useState<EnvStatus[]>([]);
  const [name, setName] = useState(`dev-${who.user.replace(/[^a-z0-9-]/g, "-")}`);
  const [base, setBase] = useState(initialBase ?? "");
  const [thin, setThin] = useState(true);
  const [ttl, setTtl] = useState("3d");
  const [values, setValues] = useState<Record<string, string>>({});
  const [error, setError] = useState<{ message: string; details: string[] } | null>(null);
  useEffect(() => {
    api.environments().then((list) => {
      setEnvs(list);
      if (!initialBase && list.length) setBase(list.some((e) => e.environment === "baseline") ? "baseline" : list[0].environment);
    });
  }, []);
  const baseEnv = envs.find((e) => e.environment === base);
  const submit = async (e: Event) => {
    e.preventDefault();
    const set: Record<string, string> = {};
    for (const [k, v] of Object.entries(values)) if (v.trim()) set[k] = v.trim();
    try {
      await api.create({ name, base, thin, set, ...(ttl ? { ttl } : {}) });
      location.hash = `#/env/${encodeURIComponent(name)}`;
    } catch (err) {
      const details = (err as { details?: string[] }).details ?? [];
      setError({ message: err instanceof Error ? err.message : String(err), details });
    }
  };
  const field = (key: string) => (e: Event) => setValues({ ...values, [key]: (e.target as HTMLInputElement).value });
  return (
    <form class="create" onSubmit={submit}>
      <h2>New environment</h2>
      <label>name <input name="name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} /></label>
      <label>base
        <select name="base" value={base} onChange={(e) => setBase((e.target as HTMLSelectElement).value)}>
          {envs.map((e) => <option key={e.environment} value={e.environment}>{e.environment}</option>)}
        </select>
      </label>
      <label><input type="checkbox" name="thin" checked={thin} onChange={(e) => setThin((e.target as HTMLInputElement).checked)} />
        thin: run only what differs (and its callers); the rest falls through to the base</label>
      <label>expires after
        <select name="ttl" value={ttl} onChange={(e) => setTtl((e.target as HTMLSelectElement).value)}>
          {TTLS.map((t) => <option key={t} value={t}>{t || "never"}</option>)}
        </select>
      </label>
      <table class="apps">
        <thead><tr><th>app_code</th><th>tag</th><th>build_type</th></tr></thead>
        <tbody>
          {(baseEnv?.apps ?? []).map((a) => (
            <tr key={a.app}>
              <td>{a.app}</td>
              <td><input name={`${a.app}.tag`} placeholder={a.tag} value={values[`${a.app}.tag`] ?? ""} onInput={field(`${a.app}.tag`)} /></td>
              <td><input name={`${a.app}.build_type`} placeholder={a.build_type} value={values[`${a.app}.build_type`] ?? ""}
                         onInput={field(`${a.app}.build_type`)} /></td>
            </tr>
          ))}
        </tbody>
      </table>
      {error && (
        <div class="error" role="alert">{error.message}
          {error.details.length > 1 && <ul>{error.details.map((d) => <li key={d}>{d}</li>)}</ul>}
        </div>
      )}
      <button type="submit">Create</button>
    </form>
  );
}
