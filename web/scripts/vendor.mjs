// Copies the browser libraries' distributions from node_modules (installed by `npm ci`, versions
// pinned in package.json / package-lock.json) into vendor/, which the hub embeds at build time:
// Leaflet, and Leaflet.markercluster (the live map's clustering). Run after changing a version:
// `npm ci && npm run vendor`, then commit vendor/.
import { cpSync, mkdirSync, readFileSync, rmSync } from "node:fs";

function vendor(name, to, files) {
  const from = `node_modules/${name}`;
  const version = JSON.parse(readFileSync(`${from}/package.json`, "utf8")).version;
  rmSync(to, { recursive: true, force: true });
  for (const [src, dest] of files) {
    mkdirSync(`${to}/${dest}`.replace(/\/[^/]*$/, ""), { recursive: true });
    cpSync(`${from}/${src}`, `${to}/${dest}`);
  }
  console.log(`vendored ${name} ${version} into ${to}`);
}

vendor("leaflet", "vendor/leaflet", [
  ...["leaflet.js", "leaflet.css"].map((f) => [`dist/${f}`, f]),
  ...["layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"]
    .map((f) => [`dist/images/${f}`, `images/${f}`]),
  ["LICENSE", "LICENSE"],
]);
vendor("leaflet.markercluster", "vendor/markercluster", [
  ...["leaflet.markercluster.js", "MarkerCluster.css", "MarkerCluster.Default.css"].map((f) => [`dist/${f}`, f]),
  ["MIT-LICENCE.txt", "LICENSE"],
]);
