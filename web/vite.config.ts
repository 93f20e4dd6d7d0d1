// Builds the web environment manager into static files (index.html, assets/*) that CMake embeds
// into the daemon (src/ui). BERTH_UI_OUT: where to write them (default dist/).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  build: {
    outDir: process.env.BERTH_UI_OUT ?? "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
