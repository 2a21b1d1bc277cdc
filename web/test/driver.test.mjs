// The driver app (/driver/) in real headless Chromium, phone-sized, against a real hub. Two
// phones drive at once, fed real traces in real time through the page's own
// `navigator.geolocation.watchPosition` by the DevTools protocol's geolocation override
// (`Emulation.setGeolocationOverride`): the first 150 s of Amazon chunk trajectory_0000 (its
// trip made by `trackhub replay --amazon-trips --trips-only`, projected as the hub projects
// it) and of the ride-along truck's `nighttime_drive.gpx`. Each phone goes offline for 30 s
// mid-trip (Playwright's offline emulation) and back. Asserted: the hub stored every fix the
// page kept exactly once (and the page has none left waiting), the Amazon driver was checked
// in automatically at the stops it dwelt at, and the manual check-in button checks in the
// last one. Keeps a screenshot of the trip view (DRIVER_SCREENSHOT, default
// ../target/browser/driver-app.png).
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { AMAZON, CHROMIUM, DATA, Hub, ORIGIN, repo, until } from "../test-support/hub.mjs";

const SCREENSHOT = process.env.DRIVER_SCREENSHOT || join(repo, "target/browser/driver-app.png");
const CHUNK = join(AMAZON, "trajectory_0000.csv");
const GPX = join(DATA, "ridealong_delivery_truck_gpx/nighttime_drive.gpx");
const FEED_MS = 150_000;
/** Offline from 40 s to 70 s of each feed. */
const OFFLINE = [40_000, 70_000];
const EARTH_RADIUS_M = 6_371_008.8;

/** An Amazon chunk's fixes `{ t (ms from its start), lat, lon }`, projected from metres
 * east/north of `ORIGIN` exactly as `src/eval/amazon.rs::project` does. */
function amazonFixes(path) {
  const [lat0, lon0] = ORIGIN.split(",").map(Number);
  const rows = readFileSync(path, "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
  const time = (s) => Date.parse(s.slice(0, 23).replace(" ", "T") + "Z");
  const t0 = time(rows[0][0]);
  return rows.map(([ts, x, y]) => ({
    t: time(ts) - t0,
    lat: lat0 + (Number(y) / EARTH_RADIUS_M) * (180 / Math.PI),
    lon: lon0 + (Number(x) / (EARTH_RADIUS_M * Math.cos((lat0 * Math.PI) / 180))) * (180 / Math.PI),
    accuracy: 10,
  }));
}

/** A GPX 1.1 track's points `{ t, lat, lon, accuracy }` (`trailsio:hacc` when present). */
function gpxFixes(path) {
  const text = readFileSync(path, "utf8");
  const out = [];
  for (const m of text.matchAll(/<trkpt lat="([-\d.]+)" lon="([-\d.]+)">(.*?)<\/trkpt>/gs)) {
    const time = Date.parse(/<time>([^<]+)<\/time>/.exec(m[3])[1]);
    const hacc = /<trailsio:hacc>([\d.]+)</.exec(m[3]);
    out.push({ t: time, lat: Number(m[1]), lon: Number(m[2]), accuracy: hacc ? Number(hacc[1]) : 10 });
  }
  const t0 = out[0].t;
  return out.map((f) => ({ ...f, t: f.t - t0 }));
}

const hub = new Hub("trackhub-driver-");
let browser;

before(async () => {
  await hub.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
});

after(async () => {
  await browser?.close();
  await hub.stop();
  hub.remove();
});

async function getJson(path, token) {
  const r = await fetch(`${hub.base}${path}`, { headers: { Authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, `${path}: ${r.status}`);
  return r.json();
}

/** Opens the app for `driverId` on a phone-sized page, signed in by `#token=`. */
async function phone(driverId) {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  await context.grantPermissions(["geolocation"], { origin: hub.base });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`${driverId} page error:`, e));
  const cdp = await context.newCDPSession(page);
  const token = hub.token("driver", driverId);
  await page.goto(`${hub.base}/driver/#token=${token}`);
  await page.waitForSelector('#hub[data-state="online"]', { timeout: 15_000 });
  assert.ok(!(await page.url()).includes("token="), "the token leaves the address bar");
  return { driverId, context, page, cdp, token };
}

/** Feeds `fixes` (their first `FEED_MS`) in real time, offline during `OFFLINE`; returns how
 * many positions were fed. */
async function feed(p, fixes) {
  const start = Date.now();
  let fed = 0;
  let offline = false;
  let last = null;
  for (const f of fixes.filter((f) => f.t <= FEED_MS)) {
    const wait = start + f.t - Date.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    if (!offline && f.t >= OFFLINE[0] && f.t < OFFLINE[1]) {
      offline = true;
      await p.context.setOffline(true);
      await p.page.waitForSelector('#hub[data-state="offline"]', { timeout: 10_000 });
    } else if (offline && f.t >= OFFLINE[1]) {
      // Fixes were kept while offline.
      assert.ok(Number(await p.page.getAttribute("#pending", "data-count")) > 0, `${p.driverId}: fixes wait while offline`);
      offline = false;
      await p.context.setOffline(false);
    }
    // The same position twice is no new position: the browser does not report it again.
    if (last && last.lat === f.lat && last.lon === f.lon) continue;
    last = f;
    await p.cdp.send("Emulation.setGeolocationOverride", { latitude: f.lat, longitude: f.lon, accuracy: f.accuracy });
    fed += 1;
  }
  return fed;
}

/** Waits until the page has nothing waiting and the hub acked all it kept; checks the hub's
 * stored track holds each of those fixes once. Returns the counts. */
async function settled(p) {
  await p.page.waitForSelector('#hub[data-state="online"]', { timeout: 60_000 });
  await until(`${p.driverId}: every kept fix acked`, 60_000, async () => {
    const d = await p.page.evaluate(() => ({ ...document.body.dataset, pending: document.getElementById("pending").dataset.count }));
    return d.pending === "0" && d.kept === d.acked && Number(d.kept) > 0;
  });
  const kept = Number(await p.page.evaluate(() => document.body.dataset.kept));
  const track = await getJson(`/v1/drivers/${encodeURIComponent(p.driverId)}/track?limit=10000`, p.token);
  const stamps = track.properties.timestamps;
  assert.equal(new Set(stamps).size, stamps.length, `${p.driverId}: a fix stored twice`);
  assert.equal(track.properties.count, kept, `${p.driverId}: stored ${track.properties.count} of ${kept} kept`);
  return { kept, stored: track.properties.count };
}

test("a driver's phone tracks a trip through a dead zone, checks in automatically and by hand", { timeout: 420_000 }, async () => {
  const made = await hub.replay(["--amazon-trips", "--trips-only", "--origin", ORIGIN], [CHUNK]);
  assert.equal(made.code, 0, made.out);
  const admin = hub.token("admin", "driver-test");

  // The truck's trip: one stop at the GPX's first pinned address (its driver stopped there
  // 80 s in). Without a trip the hub's hint asks only for a keep-alive every few minutes.
  const created = await fetch(`${hub.base}/v1/trips`, {
    method: "POST",
    headers: { Authorization: `Bearer ${admin}`, "content-type": "application/json" },
    body: JSON.stringify({
      id: "truck-night",
      driver_id: "gpx-nighttime_drive",
      stops: [{ id: "san-leandro-blvd", name: "2208–2212 San Leandro Blvd", lat: 37.715762, lon: -122.153605, radius_m: 50 }],
    }),
  });
  assert.equal(created.status, 201, await created.text());

  const amazon = await phone("amazon-trajectory_0000");
  const truck = await phone("gpx-nighttime_drive");
  const { trips } = await getJson("/v1/drivers/amazon-trajectory_0000/trips", amazon.token);
  assert.equal(trips.length, 1);
  const trip = trips[0];
  assert.deepEqual(trip.stops.map((s) => s.id), ["pos-0", "pos-1", "pos-2"]);
  // Another driver's trips are not theirs to read.
  const other = await fetch(`${hub.base}/v1/drivers/amazon-trajectory_0000/trips`, { headers: { Authorization: `Bearer ${truck.token}` } });
  assert.equal(other.status, 403);

  await amazon.page.waitForSelector('#stops li[data-stop="pos-0"][data-status="pending"]', { timeout: 15_000 });
  await truck.page.waitForSelector('#stops li[data-stop="san-leandro-blvd"]', { timeout: 15_000 });
  assert.equal(await truck.page.textContent("#next-name"), "2208–2212 San Leandro Blvd");

  const [fedA, fedT] = await Promise.all([feed(amazon, amazonFixes(CHUNK)), feed(truck, gpxFixes(GPX))]);
  const [a, t] = await Promise.all([settled(amazon), settled(truck)]);
  console.log(`amazon: fed ${fedA}, kept ${a.kept}, stored ${a.stored} | truck: fed ${fedT}, kept ${t.kept}, stored ${t.stored}`);
  assert.ok(a.kept >= 10 && t.kept >= 20, "the hub's sampling hints keep enough");

  // Checked in automatically where the driver dwelt (0:34 and 2:08 of the chunk, on foot).
  await amazon.page.waitForSelector('#stops li[data-stop="pos-1"][data-status="arrived"], #stops li[data-stop="pos-1"][data-status="departed"]', { timeout: 30_000 });
  const auto = (await getJson("/v1/checkins?driver_id=amazon-trajectory_0000", admin)).checkins;
  assert.deepEqual(auto.map((c) => c.stop_id).sort(), ["pos-0", "pos-1"]);
  assert.ok(auto.every((c) => c.source === "auto"), JSON.stringify(auto));
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await amazon.page.screenshot({ path: SCREENSHOT });
  console.log(`screenshot: ${SCREENSHOT}`);

  // The last stop, by hand.
  assert.equal(await amazon.page.getAttribute("#check-in", "data-stop"), "pos-2");
  await amazon.page.click("#check-in");
  await amazon.page.waitForSelector('#checked-in[data-stop="pos-2"]', { timeout: 15_000 });
  const all = (await getJson("/v1/checkins?driver_id=amazon-trajectory_0000", admin)).checkins;
  assert.equal(all.find((c) => c.stop_id === "pos-2")?.source, "manual", JSON.stringify(all));
  const done = await getJson(`/v1/trips/${encodeURIComponent(trip.id)}`, admin);
  assert.equal(done.status, "completed");

  // Reloaded offline, the app opens from its service worker's cache.
  await amazon.context.setOffline(true);
  await amazon.page.reload();
  await amazon.page.waitForSelector("#trip-view:not([hidden])", { timeout: 15_000 });
  await amazon.context.setOffline(false);

  await amazon.context.close();
  await truck.context.close();
});
