/** Register the service worker (scope /). Auto-update: a new worker activates at once
 * (skipWaiting + clientsClaim in sw.ts) and the page reloads onto the new build; local data
 * is in IndexedDB, so nothing is lost. */
export function registerServiceWorker(): void {
  if (!("serviceWorker" in navigator)) return;
  const hadController = navigator.serviceWorker.controller !== null;
  let reloading = false;
  navigator.serviceWorker.addEventListener("controllerchange", () => {
    if (!hadController || reloading) return; // the first install only takes control
    reloading = true;
    location.reload();
  });
  void navigator.serviceWorker.register("/sw.js", { scope: "/" }).then((reg) => {
    setInterval(() => void reg.update().catch(() => undefined), 60 * 60 * 1000);
  }).catch((e) => console.warn("service worker registration failed", e));
}
