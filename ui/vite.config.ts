import { defineConfig } from "vite";

// Plain TypeScript, no framework; output in ui/dist (tauri.conf.json frontendDist).
export default defineConfig({
  clearScreen: false,
  build: { outDir: "dist", emptyOutDir: true, target: "es2021", sourcemap: false },
});
