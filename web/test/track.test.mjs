// The customer's tracking page in a real browser (headless Chromium, a phone-sized window)
// against a real hub fed by `trackhub replay` of Amazon delivery traces with their trips. A
// link is made for the third stop of a replayed trip; the page must show "stops before yours"
// without the driver, then the driver while this stop is next, then "Delivered at …". Keeps a
// screenshot of the "next" view (TRACK_SCREENSHOT, default ../target/browser/tracking-page.png).
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { AMAZON, CHROMIUM, Hub, ORIGIN, repo, until } from "../test-support/hub.mjs";

const SCREENSHOT = process.env.TRACK_SCREENSHOT || join(repo, "target/browser/tracking-page.png");
// Amazon chunks with labelled stops; trajectory_0000 holds three (`OnFoot` from 0:34, 2:08 and
// 4:05 of its 6 minutes; checked in at 1:26, 1:31 and 3:07 of the trace, measured with a
// replay), and its third stop gets the link: at 2× it is next from 45 s to 93 s after the replay
// starts, so a slow browser start cannot miss it (the second stop is next for 5 s of trace:
// at 4× a loaded CI machine missed it).
const CHUNKS = ["trajectory_0000.csv", "trajectory_0002.csv", "trajectory_0005.csv", "trajectory_0008.csv"];

const hub = new Hub("trackhub-track-");
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

test("a customer follows their stop on a phone during a replay of real traces", { timeout: 300_000 }, async () => {
  const admin = hub.token("admin", "track-test");
  const api = async (method, path, body) => {
    const r = await fetch(`${hub.base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${admin}`, "content-type": "application/json" },
      body: body && JSON.stringify(body),
    });
    return { status: r.status, body: await r.json().catch(() => null) };
  };

  // Shifts replayed at 2× real time: a 6-minute chunk takes 180 s.
  const replayDone = hub.replay(["--speed", "2", "--amazon-trips", "--origin", ORIGIN], CHUNKS.map((f) => join(AMAZON, f)));
  const trip = await until("the replayed trip of trajectory_0000", 30_000, async () => {
    const { body } = await api("GET", "/v1/trips?status=active");
    return body.trips.find((t) => t.id.startsWith("amazon-trajectory_0000-"));
  });
  assert.equal(trip.stops.length, 3, JSON.stringify(trip.stops));
  const stop = trip.stops[2];
  const made = await api("POST", `/v1/trips/${encodeURIComponent(trip.id)}/stops/${encodeURIComponent(stop.id)}/links`, {});
  assert.equal(made.status, 201, JSON.stringify(made.body));

  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(`${hub.base}${made.body.path}`);

  // Before its stop is next: how many stops come first, an ETA, no driver.
  await page.waitForSelector('#connection[data-state="live"]', { timeout: 15_000 });
  const first = await page.evaluate(() => ({ state: document.body.dataset.state, text: document.getElementById("headline").textContent }));
  if (first.state === "upcoming") {
    assert.match(first.text, /stops? before yours/);
    assert.equal(await page.$(".driver-marker"), null, "no driver before this stop is next");
  }
  await page.waitForSelector('#eta[data-eta]', { timeout: 30_000 });

  // The driver checks in at the first stop: this one is next, and the driver appears.
  await page.waitForSelector('body[data-state="next"] .driver-marker[data-lat]', { timeout: 150_000 });
  assert.equal(await page.textContent("#headline"), "Your driver is on the way to you");
  assert.ok(!(await page.isHidden("#eta-line")), "the ETA is shown");
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT });
  console.log(`screenshot: ${SCREENSHOT}`);

  // Nothing of the trip, the driver or the fleet is on the page.
  const text = await page.evaluate(() => document.documentElement.outerHTML);
  for (const secret of [trip.id, trip.driver_id, trip.stops[0].id, trip.stops[1].id, stop.id]) {
    assert.ok(!text.includes(secret), `the page shows ${secret}`);
  }

  // Delivered, in words, once the driver is checked in here.
  await page.waitForSelector('body[data-state="delivered"]', { timeout: 120_000 });
  assert.match(await page.textContent("#headline"), /^Delivered at /);
  assert.equal(await page.$(".driver-marker"), null, "no driver after the delivery");

  // A revoked link ends the page.
  const revoked = await api("DELETE", `/v1/trips/${encodeURIComponent(trip.id)}/stops/${encodeURIComponent(stop.id)}/links/${made.body.id}`);
  assert.equal(revoked.status, 204);
  await page.waitForSelector('body[data-state="ended"]', { timeout: 15_000 });
  assert.match(await page.textContent("#headline"), /revoked/);

  const { code, out } = await replayDone;
  assert.equal(code, 0, `replay failed: ${out}`);
  await context.close();
});
