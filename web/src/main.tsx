// berth's web environment manager: sign in with a token, the environments, one environment
// (its apps with tag and build_type and the layer each comes from, instances live, dependencies,
// diff, events, log tail, actions), and a form to create one. Routing by the URL's hash.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";

import { ApiError, api, setToken, token } from "./api";
import { CreateEnvironment } from "./create";
import { EnvironmentPage } from "./environment";
import { EnvironmentList } from "./list";
import "./style.css";

function useHash(): string {
  const [hash, set] = useState(location.hash);
  useEffect(() => {
    const on = () => set(location.hash);
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function SignIn({ onSignedIn }: { onSignedIn: (who: Who) => void }) {
  const [value, set] = useState("");
  const [error, setError] = useState("");
  const submit = async (e: Event) => {
    e.preventDefault();
    setToken(value.trim());
    try {
      onSignedIn(await api.whoami());
    } catch (err) {
      setToken(null);
      setError(err instanceof Error ? err.message : String(err));
    }
  };
  return (
    <form class="signin" onSubmit={submit}>
      <h1>berth</h1>
      <p>Sign in with your API token (<code>berth token create --user NAME --role member</code>).</p>
      <input name="token" type="password" autocomplete="off" placeholder="berth_…" value={value}
             onInput={(e) => set((e.target as HTMLInputElement).value)} />
      <button type="submit">Sign in</button>
      {error && <p class="error" role="alert">{error}</p>}
    </form>
  );
}

export interface Who {
  user: string;
  role: string;
}

function App() {
  const [who, setWho] = useState<Who | null>(null);
  const [checked, setChecked] = useState(false);
  const hash = useHash();
  useEffect(() => {
    if (!token()) return setChecked(true);
    api.whoami().then(setWho).catch((err) => {
      if (err instanceof ApiError && err.status === 401) setToken(null);
    }).finally(() => setChecked(true));
  }, []);
  if (!checked) return null;
  if (!who) return <SignIn onSignedIn={setWho} />;
  const route = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let page;
  if (route[0] === "env" && route[1]) page = <EnvironmentPage name={route[1]} who={who} />;
  else if (route[0] === "create") page = <CreateEnvironment who={who} base={route[1]} />;
  else page = <EnvironmentList who={who} />;
  return (
    <>
      <header>
        <a href="#/" class="brand">berth</a>
        <nav>
          <a href="#/">Environments</a>
          {who.role !== "viewer" && <a href="#/create">New environment</a>}
        </nav>
        <span class="who">{who.user} ({who.role})
          <button class="link" onClick={() => { setToken(null); setWho(null); }}>sign out</button>
        </span>
      </header>
      <main>{page}</main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
