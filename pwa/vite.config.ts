import react from "@vitejs/plugin-react";
import { defineConfig, type Plugin } from "vite";

/** Put the app's CSS into index.html as a <style> (no render-blocking stylesheet request: on a
 * slow network the sign-in form of index.html paints as soon as the page has arrived). */
function inlineCss(): Plugin {
  return {
    name: "fieldsync-inline-css",
    apply: "build",
    enforce: "post",
    transformIndexHtml: {
      order: "post",
      handler(html, ctx) {
        const bundle = ctx.bundle;
        if (!bundle) return html;
        return html.replace(/<link rel="stylesheet"[^>]*href="\/([^"]+\.css)"[^>]*>/g, (tag, file: string) => {
          const asset = bundle[file];
          if (!asset || asset.type !== "asset") return tag;
          delete bundle[file];
          return `<style>${String(asset.source).replace(/<\/style/gi, "<\\/style")}</style>`;
        });
      },
    },
  };
}

// The app. The service worker is built by vite.sw.config.ts and gets its precache list from
// scripts/sw-manifest.mjs (see package.json "build").
export default defineConfig({
  plugins: [react(), inlineCss()],
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
