// The live map in a real browser: headless Chromium (Debian's `chromium`) driven by
// playwright-core, against a real hub process fed by `trackhub replay` of the Amazon delivery
// traces (../shared/data). Asserts what an admin sees: markers that appear and move, a check-in
// in the list, a stop turning `arrived`, a driver's track on click, and the page reconnecting
// by itself after the hub restarts. Keeps a screenshot (SCREENSHOT, default
// ../target/browser/map-replay.png).
//
// Run: `npm test` in web/ after `cargo build` (TRACKHUB_BIN, CHROMIUM and SHARED_DATA override the
// paths).
import { spawn } from "node:child_process";
import { mkdirSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { AMAZON, BIN, CHROMIUM, Hub, ORIGIN, repo } from "../test-support/hub.mjs";

const SCREENSHOT = process.env.SCREENSHOT || join(repo, "target/browser/map-replay.png");

const hubProcess = new Hub("trackhub-map-");
const dataDir = hubProcess.dataDir;
let port;
let browser;
let page;

async function startHub() {
  await hubProcess.start();
  port = hubProcess.port;
}

async function stopHub() {
  await hubProcess.stop();
}

before(async () => {
  await startHub();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu"] });
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (e) => console.error("page error:", e));
});

after(async () => {
  await browser?.close();
  await stopHub();
  hubProcess.remove();
});

test("the map follows a replay of real traces, lists check-ins and reconnects", { timeout: 240_000 }, async () => {
  const token = hubProcess.token("admin", "map-test");

  // Wall-screen sign-in: the token comes in the fragment and leaves the address bar.
  await page.goto(`http://127.0.0.1:${port}/#token=${token}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
  assert.ok(!page.url().includes(token), "the token stays out of the address bar");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("trackhub.token")), token);

  // 40 delivery shifts with their trips (stops from the dataset's labels), 300× real time.
  const chunks = readdirSync(AMAZON).filter((f) => f.endsWith(".csv")).sort().slice(0, 40).map((f) => join(AMAZON, f));
  const replay = spawn(
    BIN,
    ["replay", "--hub", `http://127.0.0.1:${port}`, "--data-dir", dataDir, "--speed", "300", "--amazon-trips", "--origin", ORIGIN, "--quiet", ...chunks],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  let replayOut = "";
  replay.stdout.on("data", (d) => { replayOut += d; });
  const replayDone = new Promise((ok) => replay.once("exit", ok));

  // Markers appear, each element carrying its driver id.
  await page.waitForSelector(".driver-marker[data-driver-id]", { timeout: 30_000 });
  const first = await page.$$eval(".driver-marker[data-driver-id]", (els) =>
    Object.fromEntries(els.map((e) => [e.dataset.driverId, `${e.dataset.lat},${e.dataset.lon}`])));
  assert.ok(Object.keys(first).length >= 1);

  // …and move: some driver seen at first is later at another position.
  await page.waitForFunction((before) => [...document.querySelectorAll(".driver-marker[data-driver-id]")]
    .some((e) => before[e.dataset.driverId] && before[e.dataset.driverId] !== `${e.dataset.lat},${e.dataset.lon}`),
  first, { timeout: 30_000 });

  // Trips are drawn, and a check-in shows up in the list with its stop turning `arrived`.
  await page.waitForSelector("[data-stop-status]", { timeout: 30_000 });
  await page.waitForSelector("#checkins li[data-driver-id]", { timeout: 90_000 });
  await page.waitForSelector('[data-stop-status="arrived"]', { timeout: 15_000 });
  const checkin = await page.$eval("#checkins li", (li) => ({ ...li.dataset, text: li.textContent }));
  assert.ok(checkin.tripId && checkin.stopId && checkin.text.includes(checkin.driverId), JSON.stringify(checkin));
  // The hub stored that check-in.
  const stored = await (await fetch(`http://127.0.0.1:${port}/v1/checkins?trip_id=${encodeURIComponent(checkin.tripId)}`,
    { headers: { Authorization: `Bearer ${token}` } })).json();
  assert.ok(stored.checkins.some((c) => c.stop_id === checkin.stopId), JSON.stringify(stored));

  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  console.log(`screenshot: ${SCREENSHOT}`);

  // Clicking a driver draws its last hour of track.
  const clicked = await page.$eval(".driver-marker[data-driver-id]", (e) => e.dataset.driverId);
  // Markers of drivers at the same depot overlap: dispatch the click on this one's element.
  await page.dispatchEvent(`.driver-marker[data-driver-id="${clicked}"]`, "click");
  await page.waitForFunction(() => Number(document.getElementById("selected-info").dataset.trackPoints) > 0, null, { timeout: 15_000 });
  assert.equal(await page.textContent("#selected-driver"), clicked);
  assert.ok(await page.$(`[data-track-of="${clicked}"]`), "the track line is drawn");

  assert.equal(await replayDone, 0, `replay failed: ${replayOut}`);
  console.log(replayOut.trim());

  // The hub restarts (SIGTERM: sockets closed with 1012): the page reconnects by itself.
  await stopHub();
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: 15_000 });
  await startHub();
  await page.waitForSelector('#status[data-state="live"]', { timeout: 60_000 });
  assert.ok((await page.$$("#checkins li")).length >= 1, "check-ins reloaded after the reconnect");
});

test("stop names and ids are shown as text, never as HTML", { timeout: 60_000 }, async () => {
  const token = hubProcess.token("admin", "map-test");
  const evil = `<img src=x onerror="window.__xss = 1">`;
  const [lat, lon] = ORIGIN.split(",").map(Number);
  const made = await fetch(`http://127.0.0.1:${port}/v1/trips`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ id: "xss-trip", driver_id: "xss-driver", stops: [{ id: "xss-stop", name: evil, lat, lon }] }),
  });
  assert.equal(made.status, 201, await made.text());
  await page.goto(`http://127.0.0.1:${port}/#token=${token}`);
  await page.waitForSelector('#status[data-state="live"]', { timeout: 15_000 });
  const stop = await page.waitForSelector('[data-stop-id="xss-stop"]', { timeout: 20_000 });
  await stop.dispatchEvent("mouseover");
  const tip = await page.waitForSelector(".leaflet-tooltip", { timeout: 10_000 });
  assert.ok((await tip.textContent()).includes(evil), await tip.innerHTML());
  assert.equal(await page.$$eval(".leaflet-tooltip img", (imgs) => imgs.length), 0);
  assert.equal(await page.evaluate(() => window.__xss), undefined, "no script ran");
});
