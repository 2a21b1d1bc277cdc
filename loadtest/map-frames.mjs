// Frame times of the dispatcher's map with thousands of live drivers in view (issue 19).
//
// Starts a hub (release build) on a free loopback port with its own data dir, drives DRIVERS
// phones with `trackhub-loadtest` (one fix per frame every FIX_INTERVAL_MS, random walks within
// ~5 km of Porto, STOPS stops each), opens the map in headless Chromium at 1280×800 with the
// whole fleet in view, and records for MEASURE_S seconds every animation frame's interval
// (requestAnimationFrame deltas) and every long task (PerformanceObserver `longtask`, ≥ 50 ms).
// Prints one JSON object: p50/p95/p99/max frame interval (ms), long tasks, drivers drawn.
// Everything it started is stopped at the end; the run is bounded by MEASURE_S + ~60 s.
//
//   cargo build --release --bin trackhub && cargo build --release -p trackhub-loadtest
//   (cd web && npm ci) && node loadtest/map-frames.mjs
//
// Env: DRIVERS (5000), FIX_INTERVAL_MS (5000), STOPS (2), MEASURE_S (30), ZOOM (fleet fit, or a
// zoom level to set after it), CHROMIUM (/usr/bin/chromium).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { chromium } = createRequire(join(repo, "web/package.json"))("playwright-core");
const HUB = join(repo, "target/release/trackhub");
const LOADTEST = join(repo, "target/release/trackhub-loadtest");
const DRIVERS = Number(process.env.DRIVERS || 5000);
const FIX_INTERVAL_MS = Number(process.env.FIX_INTERVAL_MS || 5000);
const STOPS = Number(process.env.STOPS || 2);
const MEASURE_S = Number(process.env.MEASURE_S || 30);
const FLEET = "frames";

const freePort = () => new Promise((ok) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => ok(port)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(250);
  }
}

const dataDir = mkdtempSync(join(tmpdir(), "trackhub-frames-"));
const port = await freePort();
const base = `http://127.0.0.1:${port}`;
const children = [];
const hub = spawn(HUB, ["serve", "--data-dir", dataDir, "--addr", `127.0.0.1:${port}`, "--map-tile-url", "",
  "--conn-rate-per-ip", "0", "--max-msgs-per-s", "0"], { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, RUST_LOG: "warn" } });
children.push(hub);
let browser;
try {
  await until("the hub", 30_000, async () => (await fetch(`${base}/readyz`)).ok);
  const load = spawn(LOADTEST, ["--hub", base, "--data-dir", dataDir, "--fleet", FLEET, "--drivers", String(DRIVERS),
    "--fix-interval-ms", String(FIX_INTERVAL_MS), "--stops-per-driver", String(STOPS), "--watchers", "0",
    "--duration-s", String(MEASURE_S + 60), "--warmup-s", "1"], { stdio: ["ignore", "ignore", "inherit"] });
  children.push(load);
  const token = spawnSync(HUB, ["token", "--data-dir", dataDir, "--role", "admin", "--sub", "frames", "--fleet", FLEET],
    { encoding: "utf8" }).stdout.trim().split("\n").pop();

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--disable-gpu"] });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => console.error("page error:", e.message));
  // Every phone has connected and sent a fix or two before the page opens.
  await until("the drivers online", 60_000, async () =>
    (await (await fetch(`${base}/v1/drivers`, { headers: { Authorization: `Bearer ${token}` } })).json()).drivers.length >= DRIVERS * 0.98);
  await page.goto(`${base}/#token=${token}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 30_000 });
  await page.waitForFunction((n) => window.trackhub.ctx.live.drivers.size >= n, DRIVERS * 0.98, { timeout: 60_000 });
  if (process.env.ZOOM) {
    await page.evaluate((z) => { window.trackhub.ctx.stopFollowing(); window.trackhub.map.setZoom(z); }, Number(process.env.ZOOM));
  }
  await sleep(3_000); // settle: the first clustering pass is not the steady state
  const result = await page.evaluate((ms) => new Promise((done) => {
    const intervals = [];
    const longTasks = [];
    const observer = new PerformanceObserver((list) => { for (const e of list.getEntries()) longTasks.push(e.duration); });
    observer.observe({ entryTypes: ["longtask"] });
    let last = performance.now();
    const end = last + ms;
    let updates = 0;
    const live = window.trackhub.ctx.live;
    const upsert = live.upsert;
    live.upsert = (positions) => { updates += positions.length; return upsert(positions); };
    requestAnimationFrame(function frame(now) {
      intervals.push(now - last);
      last = now;
      if (now < end) return requestAnimationFrame(frame);
      observer.disconnect();
      live.upsert = upsert;
      const map = window.trackhub.map;
      done({
        intervals,
        longTasks,
        updates,
        drivers: live.drivers.size,
        inView: [...live.drivers.values()].filter((d) => d.position && map.getBounds().contains([d.position.lat, d.position.lon])).length,
        zoom: map.getZoom(),
        clusters: document.querySelectorAll(".marker-cluster").length,
        singles: document.querySelectorAll(".driver-dot[data-driver-id]").length,
      });
    });
  }), MEASURE_S * 1000);
  // One refresh of the drivers panel (fetch, parse, render), timed on its own: the page's
  // largest periodic task.
  const panelMs = await page.evaluate(async () => {
    const times = [];
    for (let i = 0; i < 3; i++) {
      const t = performance.now();
      await window.trackhub.ctx.drivers.load();
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[1];
  });
  const sorted = result.intervals.slice(1).sort((a, b) => a - b);
  const q = (p) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 10) / 10;
  console.log(JSON.stringify({
    drivers: DRIVERS,
    fix_interval_ms: FIX_INTERVAL_MS,
    fixes_per_frame: 1,
    measured_s: MEASURE_S,
    drivers_drawn: result.drivers,
    drivers_in_view: result.inView,
    zoom: result.zoom,
    clusters: result.clusters,
    single_markers: result.singles,
    position_updates_per_s: Math.round(result.updates / MEASURE_S),
    frames: sorted.length,
    frame_ms: { p50: q(0.5), p95: q(0.95), p99: q(0.99), max: Math.round(sorted[sorted.length - 1]) },
    drivers_panel_refresh_ms: Math.round(panelMs),
    long_tasks: { count: result.longTasks.length, total_ms: Math.round(result.longTasks.reduce((a, b) => a + b, 0)) },
  }, null, 1));
} finally {
  await browser?.close();
  for (const c of children) c.kill("SIGTERM");
  await sleep(1_000);
  rmSync(dataDir, { recursive: true, force: true });
}
