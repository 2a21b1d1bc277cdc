// The driver app's service worker: keeps the app shell (page, scripts, styles, Leaflet) so the
// app opens without a network after its first load. Network first, so an upgraded hub's files
// are used as soon as it is reachable; the cache answers only when the network does not. API
// calls and sockets are never cached (fixes wait in IndexedDB, see outbox.js).
"use strict";

const CACHE = "trackhub-driver-v1";
const SHELL = [
  "/driver/",
  "/driver/app.js",
  "/driver/outbox.js",
  "/driver/app.css",
  "/driver/manifest.webmanifest",
  "/driver/icon.svg",
  "/map/vendor/leaflet/leaflet.js",
  "/map/vendor/leaflet/leaflet.css",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || !SHELL.includes(url.pathname)) {
    return;
  }
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((c) => c.put(url.pathname, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname).then((hit) => hit || Response.error())),
  );
});
