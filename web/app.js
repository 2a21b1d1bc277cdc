// trackhub's dispatcher page: sign-in, the watch socket (live positions and events of the
// viewport plus the followed driver), and the panels (drivers, trip, events, history). ES
// modules on top of the vendored Leaflet and Leaflet.markercluster globals; no build step.
import { Unauthorized, makeApi } from "./api.js";
import { createDriversPanel } from "./drivers.js";
import { createFeed } from "./feed.js";
import { createHistory } from "./history.js";
import { createLive } from "./live.js";
import { createTripPanel } from "./trip.js";

const TOKEN_KEY = "trackhub.token";
/** Reconnect backoff: full jitter over an exponential ceiling (AWS Architecture Blog,
 * "Exponential Backoff And Jitter", 2015), so a restarted hub is not hit by every map at once. */
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const TRIPS_REFRESH_MS = 15_000;
/** Active trips drawn on the map (newest first): the API's page limit. */
const MAX_TRIPS_DRAWN = 1_000;
/** Tile errors before the page says the tiles are down (one failed tile is not an outage). */
const TILE_ERRORS_SHOWN = 4;

const $ = (id) => document.getElementById(id);
/** `follow`: the view fits the fleet; `followDriver`: it keeps `ctx.selected` in view. Both end
 * when the dispatcher moves the map. */
const state = { token: null, config: null, ws: null, attempt: 0, reconnectTimer: null, subscribed: null, bbox: null, follow: true, followDriver: false, shownFleet: false };

// markercluster needs a maxZoom on the map itself (there may be no tile layer to give one).
const map = L.map("map", { worldCopyJump: true, zoomControl: true, maxZoom: 19 }).setView([20, 0], 2);
L.control.scale({ imperial: false }).addTo(map);

const ctx = {
  api: makeApi(() => state.token),
  token: () => state.token,
  /** The followed driver: the map keeps it in view and subscribes to it wherever it is. */
  selected: null,
  fail(e) {
    if (e instanceof Unauthorized) signOut(e.message);
    else console.warn(e);
  },
  follow,
  openTrip,
  stopFollowing: () => { state.follow = false; state.followDriver = false; },
  onEvent,
};
ctx.live = createLive(map, ctx);
ctx.drivers = createDriversPanel(ctx);
ctx.trip = createTripPanel(ctx);
ctx.feed = createFeed(ctx);
ctx.history = createHistory(map, ctx);
window.trackhub = { map, state, ctx };

// ---- tabs --------------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll('[role="tab"]')) {
    const on = tab.getAttribute("aria-controls") === name;
    tab.setAttribute("aria-selected", String(on));
    $(tab.getAttribute("aria-controls")).hidden = !on;
  }
}
for (const tab of document.querySelectorAll('[role="tab"]')) {
  tab.addEventListener("click", () => showTab(tab.getAttribute("aria-controls")));
}

// ---- following a driver, opening a trip -----------------------------------------------------

function follow(id) {
  ctx.selected = id;
  state.follow = false;
  state.followDriver = true;
  ctx.live.repaintSelection();
  for (const li of document.querySelectorAll("#driver-list li")) li.classList.toggle("selected", li.dataset.driverId === id);
  subscribe(true);
  ctx.live.reveal(id, 15);
  const row = ctx.drivers.get(id);
  ctx.history.prefill(id, row?.position?.ts);
  if (row?.trip) ctx.trip.open(row.trip.id);
}

/** Opens a trip from the feed, the history or a stop: the trip tab, the map on its stops. */
function openTrip(tripId) {
  showTab("trip");
  return ctx.trip.open(tripId, true);
}

/** Fits the map to a trip's stops and its driver (when drawn); the view stops following. */
ctx.fitTrip = (trip) => {
  const points = trip.stops.map((s) => [s.lat, s.lon]);
  const d = ctx.live.drivers.get(trip.driver_id);
  if (d?.position) points.push([d.position.lat, d.position.lon]);
  if (!points.length) return;
  ctx.stopFollowing();
  map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: 17 });
};

/** Presence and stop events change the drivers panel: re-read it (at most once per second). */
let driversDue = null;
function onEvent(e) {
  ctx.trip.onEvent(e);
  if (e.type === "stop.checked_in" || e.type === "stop.departed") setStopStatus(e.trip_id, e.stop_id, e.type === "stop.checked_in" ? "arrived" : "departed");
  if (!driversDue) driversDue = setTimeout(() => { driversDue = null; ctx.drivers.load(); }, 1_000);
}

function setStopStatus(tripId, stopId, status) {
  const t = ctx.live.trips.get(tripId);
  if (!t) return;
  const stop = t.trip.stops.find((s) => s.id === stopId);
  if (stop) stop.status = status;
  ctx.live.drawTrip(t.trip);
}

// ---- sign-in -----------------------------------------------------------------------------

/** The token from `#token=…` (moved into sessionStorage and out of the address bar), else the
 * one kept for this tab. */
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const fromUrl = fragment.get("token");
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl.trim());
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  clearTimeout(state.reconnectTimer);
  ctx.feed.stop();
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000, "signed out");
    state.ws = null;
  }
  setStatus("signed-out", "signed out");
  $("sign-out").hidden = true;
  $("sign-in-error").textContent = reason || "";
  if (!$("sign-in").open) $("sign-in").showModal();
}

$("sign-in-form").addEventListener("submit", () => {
  const token = $("token-input").value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  state.token = token;
  state.attempt = 0;
  connect();
});
$("sign-out").addEventListener("click", () => signOut(""));

// ---- the view ------------------------------------------------------------------------------

/** `[west, south, east, north]` of the view plus a margin, clamped to WGS84. */
function viewportBBox() {
  const b = map.getBounds().pad(0.25);
  let west = b.getWest();
  let east = b.getEast();
  if (east - west >= 360) {
    west = -180;
    east = 180;
  }
  const clampLon = (x) => Math.max(-180, Math.min(180, x));
  const clampLat = (y) => Math.max(-90, Math.min(90, y));
  return [clampLon(west), clampLat(b.getSouth()), clampLon(east), clampLat(b.getNorth())];
}

const inBBox = (bbox, lat, lon) => lon >= bbox[0] && lon <= bbox[2] && lat >= bbox[1] && lat <= bbox[3];

/** Fits the view to the drivers and active stops while the view follows the fleet. */
function fitFleet() {
  if (!state.follow) return;
  const points = [];
  for (const d of ctx.live.drivers.values()) if (d.position) points.push([d.position.lat, d.position.lon]);
  for (const t of ctx.live.trips.values()) {
    if (t.trip.status === "active") for (const s of t.trip.stops) points.push([s.lat, s.lon]);
  }
  if (points.length === 0) return;
  const bounds = L.latLngBounds(points).pad(0.1);
  if (!map.getBounds().contains(bounds) || map.getZoom() < map.getBoundsZoom(bounds) - 1) map.fitBounds(bounds, { maxZoom: 16 });
}
map.on("moveend", () => subscribe());
map.on("dragstart", ctx.stopFollowing);
map.getContainer().addEventListener("wheel", ctx.stopFollowing, { passive: true });
map.getContainer().addEventListener("dblclick", ctx.stopFollowing);
map.zoomControl.getContainer().addEventListener("click", ctx.stopFollowing);

// ---- trips and geofences -------------------------------------------------------------------

async function loadTrips() {
  const { trips } = await ctx.api.get(`/v1/trips?status=active&limit=${MAX_TRIPS_DRAWN}`);
  const seen = new Set(trips.map((t) => t.id));
  for (const [id, t] of ctx.live.trips) if (!seen.has(id) && t.trip.status === "active") ctx.live.eraseTrip(id);
  for (const trip of trips) ctx.live.drawTrip(trip);
  $("trip-count").textContent = String(trips.length);
  fitFleet();
}

async function loadZones() {
  const { geofences } = await ctx.api.get("/v1/geofences");
  ctx.live.drawZones(geofences);
}

// ---- the watch socket ----------------------------------------------------------------------

function setStatus(name, text) {
  $("status").dataset.state = name;
  $("status").textContent = text;
}

/** Sends the viewport (and the followed driver) when it changed, or always with `force`. */
function subscribe(force) {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const bbox = viewportBBox();
  const drivers = ctx.selected ? [ctx.selected] : [];
  const key = JSON.stringify([bbox, drivers]);
  if (!force && key === state.subscribed) return;
  state.subscribed = key;
  state.bbox = bbox;
  ws.send(JSON.stringify({ type: "subscribe", bbox, drivers }));
}

function onMessage(message) {
  switch (message.type) {
    case "snapshot":
      state.attempt = 0;
      setStatus("live", "live");
      ctx.live.retain(new Set(message.positions.map((p) => p.driver_id)));
      ctx.live.upsert(message.positions);
      break;
    case "positions": {
      const inScope = [];
      for (const p of message.positions) {
        if (inBBox(state.bbox, p.lat, p.lon) || p.driver_id === ctx.selected) inScope.push(p);
        else ctx.live.remove(p.driver_id);
      }
      ctx.live.upsert(inScope);
      break;
    }
    case "event":
      if (message.event.type === "driver.offline") ctx.live.setStatus(message.event.driver_id, "offline");
      onEvent(message.event);
      break;
    case "error":
      console.warn("hub error", message.code, message.message);
      break;
    default:
      break;
  }
}

/** The drivers panel read these active trips (`count` in all): draw the ones not on the map yet. */
ctx.onTripsListed = (ids, count) => {
  $("trip-count").textContent = String(count);
  // With MAX_TRIPS_DRAWN on the map, a larger fleet's other trips wait for the trip panel.
  if (ctx.live.trips.size < MAX_TRIPS_DRAWN && ids.some((id) => !ctx.live.trips.has(id))) loadTrips().catch(ctx.fail);
};

/** After each redraw: keep the followed driver in view; show the fleet once it first appears. */
ctx.onDriversDrawn = () => {
  if (ctx.selected && state.followDriver) ctx.live.reveal(ctx.selected);
  if (ctx.live.drivers.size > 0 && !state.shownFleet) {
    state.shownFleet = true;
    fitFleet();
  }
};

async function connect() {
  clearTimeout(state.reconnectTimer);
  if (!state.token) return signOut("");
  if ($("sign-in").open) $("sign-in").close();
  $("sign-out").hidden = false;
  setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
  try {
    // REST first: it tells a refused token (401) apart from a hub that is down.
    await Promise.all([loadTrips(), loadZones(), ctx.drivers.start()]);
  } catch (e) {
    if (e instanceof Unauthorized) return signOut(`Token refused: ${e.message}`);
    return scheduleReconnect();
  }
  ctx.feed.reload();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/ws/watch?access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  state.subscribed = null;
  ws.onopen = () => subscribe(true);
  ws.onmessage = (m) => {
    try {
      onMessage(JSON.parse(m.data));
    } catch (e) {
      console.warn("bad frame", e);
    }
  };
  ws.onclose = (c) => {
    state.ws = null;
    if (c.code === 4001 || c.code === 4003) return signOut(c.code === 4001 ? "Token expired" : "Forbidden");
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** state.attempt);
  const delay = 100 + Math.random() * ceiling;
  state.attempt += 1;
  setStatus("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s`);
  state.reconnectTimer = setTimeout(connect, delay);
}

setInterval(() => {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) loadTrips().catch(() => {});
}, TRIPS_REFRESH_MS);

// ---- start ---------------------------------------------------------------------------------

fetch("/map/config.json")
  .then((r) => r.json())
  .then((config) => {
    state.config = config;
    if (config.tile_url) {
      let errors = 0;
      L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 19 })
        .on("tileerror", () => { if (++errors >= TILE_ERRORS_SHOWN) $("tiles-down").hidden = false; })
        .on("tileload", () => { errors = 0; $("tiles-down").hidden = true; })
        .addTo(map);
    }
    state.token = takeToken();
    if (state.token) connect();
    else signOut("");
  });
