// The dispatcher's live map in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core, against a real hub process fed by `trackhub replay` of the Amazon delivery
// traces (../shared/data). Drives each part of the page during the replay and asserts on the
// DOM: the drivers panel (search, status filter, follow), the trip panel (timeline, check-in
// evidence, manual check-in, tracking link), the map (clusters, labels at high zoom, heading
// arrows, geofences, stop rings), the events feed with its filters, history playback; then the
// page reconnecting by itself after the hub restarts. Keeps a screenshot of each view in
// SCREENSHOTS (default ../target/browser/; docs/ holds copies).
//
// Run: `npm test` in web/ after `cargo build` (TRACKHUB_BIN, CHROMIUM and SHARED_DATA override the
// paths).
import { mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { AMAZON, CHROMIUM, Hub, ORIGIN, repo, until } from "../test-support/hub.mjs";

const SCREENSHOTS = process.env.SCREENSHOTS || join(repo, "target/browser");

const hub = new Hub("trackhub-map-");
let browser;
let page;

before(async () => {
  await hub.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => console.error("page error:", e));
  mkdirSync(SCREENSHOTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  await hub.stop();
  hub.remove();
});

async function rest(method, path, body, token) {
  const response = await fetch(`${hub.base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function shot(name) {
  // A still map: no zoom or pan animation in progress (Leaflet's own flags), labels placed.
  await page.waitForFunction(() => {
    const map = window.trackhub.map;
    return !map._animatingZoom && !(map._panAnim && map._panAnim._inProgress);
  }, null, { timeout: 5_000 });
  await page.evaluate(() => new Promise((r) => setTimeout(r, 300)));
  const path = join(SCREENSHOTS, name);
  await page.screenshot({ path });
  console.log(`screenshot: ${path}`);
}

const tab = (name) => page.click(`#tab-${name}`);
const started = Date.now();
/** Logs how far into the test a step is (s): where the time goes on a slow machine. */
const step = (name) => console.log(`${((Date.now() - started) / 1000).toFixed(1)} s: ${name}`);

test("the dispatcher's map: drivers, trip, map layers, events and history during a replay; it reconnects", { timeout: 300_000 }, async () => {
  const token = hub.token("admin", "map-test");
  const [lat, lon] = ORIGIN.split(",").map(Number);

  // A depot geofence, and a trip for a driver with no phone yet: the manual fallbacks' subject.
  const zone = await rest("POST", "/v1/geofences", { id: "depot", name: "Depot", circle: { center: [lon, lat], radius_m: 400 } }, token);
  assert.equal(zone.status, 201, JSON.stringify(zone.body));
  const manual = await rest("POST", "/v1/trips", {
    id: "manual-trip", driver_id: "phone-less",
    stops: [{ id: "door-1", name: "Door one", lat: lat + 0.01, lon }, { id: "door-2", name: "Door two", lat: lat + 0.012, lon }],
  }, token);
  assert.equal(manual.status, 201, JSON.stringify(manual.body));

  // Wall-screen sign-in: the token comes in the fragment and leaves the address bar.
  await page.goto(`${hub.base}/#token=${token}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
  assert.ok(!page.url().includes(token), "the token stays out of the address bar");
  assert.ok(await page.isVisible("#sign-out"), "signed in: sign-out shown");
  await page.waitForSelector('[data-geofence-id="depot"]', { state: "attached", timeout: 10_000 });

  // 40 delivery shifts with their trips (stops from the dataset's labels), 30× real time: the
  // replay runs about a minute (the longest chunk spans 30 min), so the page is driven while
  // drivers move.
  const chunks = readdirSync(AMAZON).filter((f) => f.endsWith(".csv")).sort().slice(0, 40).map((f) => join(AMAZON, f));
  const replay = hub.replay(["--speed", "30", "--amazon-trips", "--origin", ORIGIN], chunks);

  // ---- the map: markers, clusters, heading arrows ----------------------------------------------
  step("the map");
  await page.waitForFunction(() => window.trackhub.ctx.live.drivers.size >= 30, null, { timeout: 30_000 });
  // Forty drivers around one depot: at the fleet's zoom most sit in clusters, and the clusters'
  // counts plus the single markers account for every driver drawn.
  await page.waitForSelector(".marker-cluster", { timeout: 15_000 });
  await until("clusters to account for every driver", 15_000, () => page.evaluate(() => {
    const clustered = [...document.querySelectorAll(".marker-cluster")].reduce((n, c) => n + Number(c.textContent), 0);
    const singles = document.querySelectorAll(".driver-dot[data-driver-id]").length;
    return clustered + singles === window.trackhub.ctx.live.drivers.size;
  }));
  // Moving drivers carry a heading arrow (the traces have no course: the page derives it from
  // successive positions). Clustered markers are detached from the DOM: ask their elements.
  await page.waitForFunction(() => [...window.trackhub.ctx.live.drivers.values()]
    .some((d) => d.dot.classList.contains("has-heading") && d.heading.style.transform.startsWith("rotate(")), null, { timeout: 30_000 });

  // ---- the drivers panel -------------------------------------------------------------------------
  step("the drivers panel");
  await page.waitForFunction(() => document.querySelectorAll("#driver-list li").length >= 41, null, { timeout: 20_000 });
  await page.waitForSelector('#driver-list li[data-status="moving"]', { timeout: 20_000 });
  assert.match(await page.textContent("#counts"), /\d+ online of 4\d drivers\s*·\s*\d+ active trips/);
  await page.fill("#driver-search", "trajectory_0003");
  await until("the search to leave one driver", 5_000, async () => (await page.$$("#driver-list li")).length === 1);
  assert.equal(await page.getAttribute("#driver-list li", "data-driver-id"), "amazon-trajectory_0003");
  await page.fill("#driver-search", "");
  await page.selectOption("#driver-status", "offline");
  const offline = await page.$$eval("#driver-list li", (lis) => lis.map((li) => li.dataset.status));
  assert.ok(offline.includes("offline") && offline.every((s) => s === "offline"), JSON.stringify(offline));
  await page.selectOption("#driver-status", "");
  await shot("map-drivers.png");

  // Follow a driver with a trip: the map centres on it and its trip opens.
  const followed = await page.$eval("#driver-list li:has(.progress):not([data-driver-id='phone-less'])", (li) => li.dataset.driverId);
  await page.click(`#driver-list li[data-driver-id="${followed}"]`);
  await until("the map to centre on the followed driver", 10_000, () => page.evaluate((id) => {
    const d = window.trackhub.ctx.live.drivers.get(id);
    return d && window.trackhub.map.getBounds().contains([d.position.lat, d.position.lon]) && window.trackhub.map.getZoom() >= 15;
  }, followed));
  await tab("trip");
  await page.waitForSelector("#trip-stops li[data-state]", { timeout: 10_000 });

  // ---- labels at high zoom, stop rings ------------------------------------------------------------
  step("labels at high zoom");
  await page.evaluate(() => window.trackhub.map.setZoom(17));
  await page.waitForSelector(".leaflet-container.show-labels", { timeout: 5_000 });
  await until("a driver's label to show", 10_000, () => page.evaluate(() =>
    [...document.querySelectorAll(".driver-dot .label")].some((l) => getComputedStyle(l).display !== "none")));
  await page.waitForSelector("[data-ring-of]", { state: "attached", timeout: 5_000 });

  // ---- the events feed: a check-in with its evidence ------------------------------------------------
  step("the events feed");
  await tab("events");
  const checkin = await page.waitForSelector('#event-list li[data-type="stop.checked_in"]', { timeout: 120_000 });
  const tripOfCheckin = await checkin.getAttribute("data-trip-id");
  await page.selectOption("#event-type", "stop.checked_in");
  await until("the type filter", 10_000, () => page.$$eval("#event-list li", (lis) =>
    lis.length > 0 && lis.every((li) => li.dataset.type === "stop.checked_in")));
  await page.fill("#event-trip", tripOfCheckin);
  await page.dispatchEvent("#event-trip", "change");
  await until("the trip filter", 10_000, () => page.$$eval("#event-list li", (lis, trip) =>
    lis.length > 0 && lis.every((li) => li.dataset.tripId === trip), tripOfCheckin));
  await shot("map-events.png");
  await page.click(`#event-list li[data-trip-id="${tripOfCheckin}"]`);
  await page.waitForSelector(`#trip-body[data-trip-id="${tripOfCheckin}"]`, { timeout: 10_000 });
  const why = await page.textContent('#trip-stops li[data-state="arrived"] .evidence, #trip-stops li[data-state="departed"] .evidence');
  assert.match(why, /why: (stationary inside: \d+ fixes over \d+ s|phone went quiet inside for \d+ s|the phone reported itself still)/);
  await shot("map-trip.png");

  // ---- the trip panel's fallbacks: a tracking link and a manual check-in ----------------------------
  step("the trip panel's fallbacks");
  await tab("drivers");
  await page.fill("#driver-search", "phone-less");
  await page.click('#driver-list li[data-driver-id="phone-less"]');
  await page.waitForSelector('#trip-body[data-trip-id="manual-trip"]', { state: "attached", timeout: 10_000 });
  await tab("trip");
  assert.ok(await page.isVisible("#trip-body"), "following a driver opens its trip");
  await page.click('#trip-stops li[data-stop-id="door-1"] button[aria-label^="Create a customer tracking link"]');
  await page.waitForSelector("#link-box:not([hidden])", { timeout: 5_000 });
  const url = await page.inputValue("#link-url");
  assert.match(url, /\/t\/[A-Za-z0-9_-]{43}$/);
  assert.equal((await fetch(url)).status, 200, "the link opens the customer's page");
  await page.click('#trip-stops li[data-stop-id="door-1"] button[aria-label^="Check in"]');
  await page.waitForSelector('#trip-stops li[data-stop-id="door-1"][data-state="arrived"] .evidence', { timeout: 10_000 });
  assert.match(await page.textContent('#trip-stops li[data-stop-id="door-1"] .evidence'), /checked in by hand/);
  const stored = await rest("GET", "/v1/checkins?trip_id=manual-trip", null, token);
  assert.deepEqual(stored.body.checkins.map((c) => [c.stop_id, c.source, c.evidence.kind]), [["door-1", "manual", "manual"]]);
  assert.match(await page.textContent("#trip-summary"), /1\/2 stops/);
  // …and the feed, filtered to that driver, shows it.
  await tab("events");
  await page.fill("#event-trip", "");
  await page.selectOption("#event-type", "");
  await page.fill("#event-driver", "phone-less");
  await page.dispatchEvent("#event-driver", "change");
  await until("the driver filter", 10_000, () => page.$$eval("#event-list li", (lis) =>
    lis.length === 1 && lis[0].dataset.type === "stop.checked_in" && lis[0].dataset.driverId === "phone-less"));

  // ---- history playback of the followed driver ------------------------------------------------------
  step("history playback");
  await tab("drivers");
  await page.fill("#driver-search", followed);
  await page.click(`#driver-list li[data-driver-id="${followed}"]`);
  await tab("history");
  assert.equal(await page.inputValue("#history-driver"), followed, "the form is prefilled with the followed driver");
  await page.click('#history-form button[type="submit"]');
  await page.waitForSelector("#history-player:not([hidden])", { timeout: 15_000 });
  const points = Number(await page.getAttribute("#history-slider", "max")) + 1;
  assert.ok(points >= 20, `track of ${points} fixes`);
  assert.ok(await page.$(`[data-history-of="${followed}"]`), "the track is drawn");
  const first = await page.textContent("#history-at");
  await page.fill("#history-slider", String(Math.floor(points / 2)));
  await page.dispatchEvent("#history-slider", "input");
  assert.notEqual(await page.textContent("#history-at"), first, "scrubbing moves the time");
  assert.ok((await page.$$("#history-stops li")).length >= 1, "stops and check-ins of the range are listed");
  await page.click("#history-play");
  await until("playback to advance", 5_000, async () =>
    Number(await page.getAttribute("#history-at", "data-index")) > Math.floor(points / 2));
  await page.click("#history-play");
  await shot("map-history.png");

  // ---- a tablet held upright: the panel goes under the map, both usable ------------------------------
  step("tablet");
  await page.setViewportSize({ width: 820, height: 1180 });
  await tab("drivers");
  const mapBox = await page.locator("#map").boundingBox();
  const panelBox = await page.locator("#panel").boundingBox();
  assert.ok(mapBox.height >= 500 && mapBox.width === 820, JSON.stringify(mapBox));
  assert.ok(panelBox.y >= mapBox.y + mapBox.height - 1 && panelBox.width === 820, JSON.stringify(panelBox));
  await page.fill("#driver-search", "");
  await page.dispatchEvent("#driver-search", "input");
  assert.ok(await page.isVisible("#driver-list li"), "the list is usable");
  await shot("map-tablet.png");
  await page.setViewportSize({ width: 1280, height: 800 });

  const { code, out } = await replay;
  assert.equal(code, 0, `replay failed: ${out}`);
  console.log(out.trim());

  // ---- the hub restarts (SIGTERM: sockets closed with 1012): the page reconnects by itself ----------
  step("the hub restarts");
  await hub.stop();
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 15_000 });
  await hub.start();
  await page.waitForSelector('#status[data-state="live"]', { timeout: 60_000 });
  await tab("drivers");
  await page.fill("#driver-search", "");
  await page.dispatchEvent("#driver-search", "input");
  await until("the drivers panel after the restart", 15_000, async () => (await page.$$("#driver-list li")).length >= 40);
});

test("stop names and ids are shown as text, never as HTML", { timeout: 60_000 }, async () => {
  const token = hub.token("admin", "map-test");
  const evil = `<img src=x onerror="window.__xss = 1">`;
  const [lat, lon] = ORIGIN.split(",").map(Number);
  const made = await rest("POST", "/v1/trips", { id: "xss-trip", driver_id: "xss-driver", stops: [{ id: "xss-stop", name: evil, lat, lon }] }, token);
  assert.equal(made.status, 201, JSON.stringify(made.body));
  await page.goto("about:blank"); // a new document: a fragment-only change would not reload
  await page.goto(`${hub.base}/#token=${token}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
  const stop = await page.waitForSelector('[data-stop-id="xss-stop"]', { timeout: 20_000 });
  await stop.dispatchEvent("mouseover");
  const tip = await page.waitForSelector(".leaflet-tooltip", { timeout: 10_000 });
  assert.ok((await tip.textContent()).includes(evil), await tip.innerHTML());
  // The trip panel and the drivers panel show the name as text too.
  await page.fill("#driver-search", "xss-driver");
  await page.click('#driver-list li[data-driver-id="xss-driver"]');
  await tab("trip");
  await page.waitForSelector('#trip-stops li[data-stop-id="xss-stop"]', { timeout: 10_000 });
  assert.ok((await page.textContent("#trip-stops")).includes(evil));
  assert.equal(await page.$$eval("img", (imgs) => imgs.filter((i) => !i.src.includes("/map/")).length), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined, "no script ran");
});

test("a map whose tiles cannot load says so instead of showing a grey map", { timeout: 60_000 }, async () => {
  const token = hub.token("admin", "map-test");
  // The hub's map config, with a tile server nobody answers on (a machine offline).
  await page.route("**/map/config.json", async (route) => {
    const config = await (await route.fetch()).json();
    await route.fulfill({ json: { ...config, tile_url: "http://127.0.0.1:9/{z}/{x}/{y}.png" } });
  });
  await page.goto("about:blank"); // a new document: a fragment-only change would not reload
  await page.goto(`${hub.base}/#token=${token}`);
  await page.waitForSelector("#tiles-down:not([hidden])", { timeout: 20_000 });
  assert.match(await page.textContent("#tiles-down"), /cannot be loaded/);
  await page.unroute("**/map/config.json");
});
