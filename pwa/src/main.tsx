import { StrictMode } from "react";
import { flushSync } from "react-dom";
import { createRoot } from "react-dom/client";
import { restoreFocus, takeBootLogin } from "./boot";
import { registerServiceWorker } from "./registerSW";
import { boot } from "./store";
import { App } from "./ui/App";
import "./styles.css";

// index.html's sign-in form is replaced by the app's in this one task (what was typed, the caret
// and a sign-in already sent carry over), so no keystroke is lost in between
const handover = takeBootLogin();
void boot(); // without a stored session this finishes at once: the first render is the sign-in form
const root = createRoot(document.getElementById("root")!);
flushSync(() => root.render(<StrictMode><App /></StrictMode>));
restoreFocus(handover);

if (import.meta.env.PROD) registerServiceWorker();
