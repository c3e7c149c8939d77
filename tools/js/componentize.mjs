// Build one JavaScript variant into a component with ComponentizeJS's API
// (not the jco CLI: jco 1.35.0's CLI breaks with preview2-shim 0.26.1).
//
//   node componentize.mjs <source.js> <wit-dir> <world> <out.wasm>
//
// Run by host/src/build/javascript.rs inside the build sandbox. Every WASI
// feature of the engine is disabled (stdio, random, clocks, http,
// fetch-event), so the component imports no WASI at all: only the
// vivarium:agent interfaces of <world>.
import { writeFile } from 'node:fs/promises';
import { componentize } from '@bytecodealliance/componentize-js';

const [sourcePath, witPath, worldName, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs <source.js> <wit-dir> <world> <out.wasm>');
  process.exit(2);
}
try {
  const { component } = await componentize({
    sourcePath,
    witPath,
    worldName,
    disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
    // Wizer (wasmtime) needs a HOME for its default configuration; the
    // sandbox's HOME is the build's private temporary directory. Nothing
    // else of the (already scrubbed) environment reaches the snapshot.
    env: { HOME: process.env.HOME ?? '/nonexistent' },
  });
  await writeFile(out, component);
} catch (e) {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
}
