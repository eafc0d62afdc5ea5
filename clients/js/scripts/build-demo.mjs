// Bundles the demo page's script (demo/demo.ts with the client library and the
// OpenTelemetry web SDK) into ../../src/demo.bundle.js, which the gateway embeds:
// `cargo build` needs no Node. With --check, builds in memory and fails when the
// committed bundle differs (the test command runs this).
import { readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const out = fileURLToPath(new URL("../../../src/demo.bundle.js", import.meta.url));
const check = process.argv.includes("--check");

const result = await build({
  entryPoints: [`${root}demo/demo.ts`],
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  // Browsers have a global WebSocket: the client never loads `ws` there.
  external: ["ws"],
  legalComments: "none",
  banner: {
    js: "// Generated from clients/js/demo/demo.ts by `npm run build:demo` in clients/js; do not edit. Licenses: clients/js/package-lock.json.",
  },
  write: false,
  logLevel: "warning",
});
const bundle = result.outputFiles[0].text;

if (check) {
  let committed = "";
  try {
    committed = readFileSync(out, "utf8");
  } catch {
    // Missing counts as different.
  }
  if (committed !== bundle) {
    console.error(`src/demo.bundle.js differs from a fresh build of clients/js/demo (${committed.length} committed bytes, ${bundle.length} built): run \`npm run build:demo\` in clients/js and commit it`);
    process.exit(1);
  }
  console.log(`src/demo.bundle.js matches a fresh build (${bundle.length} bytes)`);
} else {
  writeFileSync(out, bundle);
  console.log(`wrote src/demo.bundle.js (${bundle.length} bytes)`);
}
