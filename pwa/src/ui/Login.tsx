import { useEffect, useState } from "react";
import { ApiError, NetworkError } from "../api";
import { bootLogin, type BootLogin, type BootResponse } from "../boot";
import { useApp } from "../store";

export function Login({ reauth = false }: { reauth?: boolean }) {
  const signIn = useApp((s) => s.signIn);
  const session = useApp((s) => s.session);
  // what was typed into index.html's form before this script arrived (src/boot.ts)
  const [handover] = useState<BootLogin | null>(() => (reauth ? null : bootLogin()));
  const [email, setEmail] = useState(reauth && session ? session.user.email : handover?.email ?? "");
  const [password, setPassword] = useState(handover?.password ?? "");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(handover?.pending != null);
  const submit = async (em: string, pw: string, sent?: Promise<BootResponse>) => {
    setBusy(true);
    setError(null);
    try {
      await signIn(em, pw, sent);
    } catch (err) {
      setError(err instanceof NetworkError ? "The server cannot be reached. Signing in needs a connection."
        : err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => {
    // the boot form already sent the sign-in: wait for that answer rather than sending again
    const p = handover?.pending;
    if (!p || (handover as { started?: boolean }).started) return;
    (handover as { started?: boolean }).started = true;
    void submit(p.email, p.password, p.response);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [handover]);
  return (
    <main className="login" id="main">
      <form className="card login-card" aria-labelledby="login-h" data-ready="1" onSubmit={(e) => {
        e.preventDefault();
        void submit(email, password);
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
