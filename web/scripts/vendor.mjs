// Copies Leaflet's distribution from node_modules (installed by `npm ci`, version pinned in
// package.json / package-lock.json) into vendor/, which the hub embeds at build time. Run after
// changing the version: `npm ci && npm run vendor`, then commit vendor/.
import { cpSync, mkdirSync, readFileSync, rmSync } from "node:fs";

const from = "node_modules/leaflet";
const to = "vendor/leaflet";
const version = JSON.parse(readFileSync(`${from}/package.json`, "utf8")).version;
rmSync(to, { recursive: true, force: true });
mkdirSync(`${to}/images`, { recursive: true });
for (const file of ["leaflet.js", "leaflet.css"]) cpSync(`${from}/dist/${file}`, `${to}/${file}`);
for (const file of ["layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"]) {
  cpSync(`${from}/dist/images/${file}`, `${to}/images/${file}`);
}
cpSync(`${from}/LICENSE`, `${to}/LICENSE`);
console.log(`vendored leaflet ${version} into ${to}`);
