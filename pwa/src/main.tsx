import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { boot } from "./store";
import { App } from "./ui/App";
import "./styles.css";

createRoot(document.getElementById("root")!).render(<StrictMode><App /></StrictMode>);
void boot();

if ("serviceWorker" in navigator && import.meta.env.PROD) {
  void import("virtual:pwa-register").then(({ registerSW }) => registerSW({ immediate: true }));
}
