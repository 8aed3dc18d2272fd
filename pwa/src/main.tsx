import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { registerServiceWorker } from "./registerSW";
import { boot } from "./store";
import { App } from "./ui/App";
import "./styles.css";

createRoot(document.getElementById("root")!).render(<StrictMode><App /></StrictMode>);
void boot();

if (import.meta.env.PROD) registerServiceWorker();
