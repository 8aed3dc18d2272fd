import { useState } from "react";
import { ApiError, NetworkError } from "../api";
import { useApp } from "../store";

export function Login({ reauth = false }: { reauth?: boolean }) {
  const signIn = useApp((s) => s.signIn);
  const session = useApp((s) => s.session);
  const [email, setEmail] = useState(reauth && session ? session.user.email : "");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main className="login" id="main">
      <form className="card login-card" aria-labelledby="login-h" onSubmit={async (e) => {
        e.preventDefault();
        setBusy(true);
        setError(null);
        try {
          await signIn(email, password);
        } catch (err) {
          setError(err instanceof NetworkError ? "The server cannot be reached. Signing in needs a connection."
            : err instanceof ApiError ? err.message : String(err));
        } finally {
          setBusy(false);
        }
      }}>
        <h1 id="login-h">FieldSync CRM</h1>
        {reauth && <p>Your session ended. Sign in again: your changes on this device are kept.</p>}
        <label htmlFor="email">Email</label>
        <input id="email" type="email" autoComplete="username" required value={email}
               onChange={(e) => setEmail(e.target.value)} />
        <label htmlFor="password">Password</label>
        <input id="password" type="password" autoComplete="current-password" required value={password}
               onChange={(e) => setPassword(e.target.value)} />
        {error && <p className="error" role="alert">{error}</p>}
        <button type="submit" className="btn btn-primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      </form>
    </main>
  );
}
