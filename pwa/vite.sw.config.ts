import { defineConfig } from "vite";

// The service worker (src/sw.ts) as one classic script, dist/sw.js, next to the app build.
export default defineConfig({
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: false,
    target: "es2022",
    sourcemap: false,
    minify: true,
    lib: { entry: "src/sw.ts", formats: ["iife"], name: "fieldsyncServiceWorker", fileName: () => "sw.js" },
  },
  define: { "process.env.NODE_ENV": JSON.stringify("production") },
});
