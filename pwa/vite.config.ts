import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The app. The service worker is built by vite.sw.config.ts and gets its precache list from
// scripts/sw-manifest.mjs (see package.json "build").
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "dist",
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
});
