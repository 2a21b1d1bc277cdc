// trackhub live map: follows /v1/ws/watch for the current viewport and draws drivers, trips,
// stops and check-ins. No build step: plain ES2020 on top of the vendored Leaflet global `L`.
"use strict";

(() => {
  const TOKEN_KEY = "trackhub.token";
  /** A marker fades after this long without a fix (ms, browser clock). */
  const STALE_MS = 30_000;
  const VERY_STALE_MS = 90_000;
  const MAX_CHECKINS = 50;
  /** Reconnect backoff: full jitter over an exponential ceiling (AWS Architecture Blog,
   * "Exponential Backoff And Jitter", 2015), so a restarted hub is not hit by every map at once. */
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 30_000;
  const TRIPS_REFRESH_MS = 15_000;
  const STOP_COLOURS = { pending: "#1e88e5", arrived: "#2e7d32", departed: "#8d8d8d" };
  const TRIP_COLOURS = { active: "#1565c0", completed: "#9e9e9e" };

  const $ = (id) => document.getElementById(id);
  const state = {
    token: null,
    config: null,
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    /** driver id → { marker, el, lat, lon, from, to, animStart, animMs, ts, seenAt } */
    drivers: new Map(),
    /** trip id → { trip, line, stops: Map(stop id → circle marker) } */
    trips: new Map(),
    checkinKeys: new Set(),
    subscribed: null,
    selected: null,
    trackLayer: null,
    /** The view follows the fleet (fit to drivers and stops) until the user pans or zooms. */
    follow: true,
    shownFleet: false,
  };

  // ---- sign-in ---------------------------------------------------------------------------

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
    if (state.ws) {
      state.ws.onclose = null;
      state.ws.close(1000, "signed out");
      state.ws = null;
    }
    setStatus("signed-out", "signed out");
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

  // ---- REST ------------------------------------------------------------------------------

  class Unauthorized extends Error {}

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` } });
    if (response.status === 401 || response.status === 403) {
      const problem = await response.json().catch(() => ({}));
      throw new Unauthorized(problem.detail || problem.title || `HTTP ${response.status}`);
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // ---- map -------------------------------------------------------------------------------

  const map = L.map("map", { worldCopyJump: true, zoomControl: true }).setView([20, 0], 2);
  const tripLayer = L.layerGroup().addTo(map);
  const stopLayer = L.layerGroup().addTo(map);
  const driverLayer = L.layerGroup().addTo(map);
  window.trackhub = { map, state };

  map.on("moveend", () => subscribe());
  map.on("zoomend", () =>
    map.getContainer().classList.toggle("show-labels", map.getZoom() >= 14));

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

  function inBBox(bbox, lat, lon) {
    return lon >= bbox[0] && lon <= bbox[2] && lat >= bbox[1] && lat <= bbox[3];
  }

  /** Fits the view to the drivers and active stops while the view follows the fleet. */
  function fitFleet() {
    if (!state.follow) return;
    const points = [];
    for (const d of state.drivers.values()) points.push([d.lat, d.lon]);
    for (const t of state.trips.values()) {
      if (t.trip.status === "active") for (const s of t.trip.stops) points.push([s.lat, s.lon]);
    }
    if (points.length === 0) return;
    const bounds = L.latLngBounds(points).pad(0.1);
    if (!map.getBounds().contains(bounds) || map.getZoom() < map.getBoundsZoom(bounds) - 1) {
      map.fitBounds(bounds, { maxZoom: 16 });
    }
  }
  const stopFollowing = () => { state.follow = false; };
  map.on("dragstart", stopFollowing);
  map.getContainer().addEventListener("wheel", stopFollowing, { passive: true });
  map.getContainer().addEventListener("dblclick", stopFollowing);
  map.zoomControl.getContainer().addEventListener("click", stopFollowing);

  // ---- drivers ---------------------------------------------------------------------------

  function driverIcon(id) {
    const label = document.createElement("span");
    label.className = "driver-label";
    label.textContent = id;
    return L.divIcon({
      className: "driver-marker",
      html: `<div class="driver-dot"></div>${label.outerHTML}`,
      iconSize: [14, 14],
      iconAnchor: [7, 7],
    });
  }

  /** A position from the hub: `{driver_id, lat, lon, ts, accuracy_m?, speed_mps?, heading_deg?}`. */
  function upsertDriver(p) {
    let d = state.drivers.get(p.driver_id);
    const now = performance.now();
    if (!d) {
      const marker = L.marker([p.lat, p.lon], { icon: driverIcon(p.driver_id), keyboard: false, title: p.driver_id });
      marker.on("click", () => select(p.driver_id));
      marker.addTo(driverLayer);
      const el = marker.getElement();
      el.dataset.driverId = p.driver_id;
      d = { marker, el, lat: p.lat, lon: p.lon, from: [p.lat, p.lon], to: [p.lat, p.lon], animStart: now, animMs: 0 };
      state.drivers.set(p.driver_id, d);
    } else {
      // Glide from where the marker is drawn now to the new fix over about one update interval.
      const drawn = d.marker.getLatLng();
      d.from = [drawn.lat, drawn.lng];
      d.to = [p.lat, p.lon];
      d.animMs = Math.min(1_000, Math.max(state.config.flush_interval_ms, now - d.seenAt));
      d.animStart = now;
      animate();
    }
    d.lat = p.lat;
    d.lon = p.lon;
    d.ts = p.ts;
    d.fix = p;
    d.seenAt = now;
    d.el.dataset.lat = String(p.lat);
    d.el.dataset.lon = String(p.lon);
    d.el.dataset.ts = p.ts;
    d.el.classList.remove("stale", "very-stale");
    if (state.selected === p.driver_id) showSelection();
  }

  function removeDriver(id) {
    const d = state.drivers.get(id);
    if (!d) return;
    driverLayer.removeLayer(d.marker);
    state.drivers.delete(id);
  }

  let animating = false;
  function animate() {
    if (animating) return;
    animating = true;
    requestAnimationFrame(function frame(now) {
      let moving = false;
      for (const d of state.drivers.values()) {
        if (d.animMs <= 0) continue;
        const k = Math.min(1, (now - d.animStart) / d.animMs);
        d.marker.setLatLng([d.from[0] + (d.to[0] - d.from[0]) * k, d.from[1] + (d.to[1] - d.from[1]) * k]);
        if (k < 1) moving = true;
        else d.animMs = 0;
      }
      if (moving) requestAnimationFrame(frame);
      else animating = false;
    });
  }

  setInterval(() => {
    const now = performance.now();
    for (const d of state.drivers.values()) {
      const age = now - d.seenAt;
      d.el.classList.toggle("stale", age >= STALE_MS && age < VERY_STALE_MS);
      d.el.classList.toggle("very-stale", age >= VERY_STALE_MS);
    }
  }, 2_000);

  function updateCounts() {
    $("driver-count").textContent = String(state.drivers.size);
    let active = 0;
    for (const t of state.trips.values()) if (t.trip.status === "active") active += 1;
    $("trip-count").textContent = String(active);
  }

  // ---- selection and track ---------------------------------------------------------------

  async function select(id) {
    const previous = state.drivers.get(state.selected);
    if (previous) previous.el.classList.remove("selected");
    state.selected = id;
    const d = state.drivers.get(id);
    if (d) d.el.classList.add("selected");
    showSelection();
    subscribe(true);
    if (state.trackLayer) map.removeLayer(state.trackLayer);
    state.trackLayer = null;
    // The last hour before the driver's latest fix (a replay's fixes carry their original times).
    const last = d ? Date.parse(d.ts) : Date.now();
    const from = last - 3_600_000;
    try {
      const track = await api(`/v1/drivers/${encodeURIComponent(id)}/track?from=${from}&to=${last + 60_000}`);
      if (state.selected !== id) return;
      state.trackLayer = L.geoJSON(track, { style: { color: "#d81b60", weight: 3, opacity: 0.8 } }).addTo(map);
      state.trackLayer.getLayers().forEach((l) => l.getElement()?.setAttribute("data-track-of", id));
      $("selected-info").dataset.trackPoints = String(track.properties.count);
      showSelection(track.properties.count);
    } catch (e) {
      if (e instanceof Unauthorized) signOut(e.message);
      else console.warn("track", e);
    }
  }

  function showSelection(trackPoints) {
    const id = state.selected;
    $("selection").hidden = !id;
    if (!id) return;
    $("selected-driver").textContent = id;
    const d = state.drivers.get(id);
    const parts = [];
    if (d) {
      parts.push(`last fix ${new Date(d.ts).toLocaleTimeString()}`);
      if (d.fix.speed_mps != null) parts.push(`${(d.fix.speed_mps * 3.6).toFixed(0)} km/h`);
      if (d.fix.accuracy_m != null) parts.push(`±${d.fix.accuracy_m.toFixed(0)} m`);
    } else {
      parts.push("offline");
    }
    if (trackPoints != null) parts.push(`${trackPoints} fixes in the last hour`);
    $("selected-info").textContent = parts.join(" · ");
  }

  // ---- trips and stops -------------------------------------------------------------------

  function drawTrip(trip) {
    const old = state.trips.get(trip.id);
    if (old) {
      tripLayer.removeLayer(old.line);
      for (const c of old.stops.values()) stopLayer.removeLayer(c);
    }
    const points = trip.stops.map((s) => [s.lat, s.lon]);
    const line = L.polyline(points, {
      color: TRIP_COLOURS[trip.status] || TRIP_COLOURS.active,
      weight: 2,
      dashArray: trip.status === "active" ? "6 6" : null,
      opacity: 0.7,
      interactive: false,
    }).addTo(tripLayer);
    line.getElement()?.setAttribute("data-trip-id", trip.id);
    line.getElement()?.setAttribute("data-trip-status", trip.status);
    const stops = new Map();
    for (const s of trip.stops) {
      const circle = L.circleMarker([s.lat, s.lon], {
        radius: 6,
        color: "#fff",
        weight: 1.5,
        fillColor: STOP_COLOURS[s.status] || STOP_COLOURS.pending,
        fillOpacity: 0.95,
      }).addTo(stopLayer);
      // Text nodes, never HTML: stop names and ids come from API clients (issue 16: a stop
      // named `<img onerror=…>` ran script in the dispatcher's page).
      const tip = document.createElement("div");
      tip.append(`${s.name || s.id} · ${s.status}`, document.createElement("br"), `trip ${trip.id} · driver ${trip.driver_id}`);
      circle.bindTooltip(tip);
      const el = circle.getElement();
      el?.setAttribute("data-trip-id", trip.id);
      el?.setAttribute("data-stop-id", s.id);
      el?.setAttribute("data-stop-status", s.status);
      stops.set(s.id, circle);
    }
    state.trips.set(trip.id, { trip, line, stops });
  }

  function setStopStatus(tripId, stopId, status) {
    const t = state.trips.get(tripId);
    if (!t) {
      loadTrip(tripId);
      return;
    }
    const stop = t.trip.stops.find((s) => s.id === stopId);
    if (stop) stop.status = status;
    drawTrip(t.trip);
  }

  async function loadTrip(id) {
    try {
      drawTrip(await api(`/v1/trips/${encodeURIComponent(id)}`));
      updateCounts();
    } catch (e) {
      console.warn("trip", id, e);
    }
  }

  async function loadTrips() {
    const { trips } = await api("/v1/trips?status=active&limit=500");
    const seen = new Set(trips.map((t) => t.id));
    for (const [id, t] of state.trips) {
      // A trip completed since the last load keeps its final colours until the next load.
      if (!seen.has(id) && t.trip.status === "active") {
        tripLayer.removeLayer(t.line);
        for (const c of t.stops.values()) stopLayer.removeLayer(c);
        state.trips.delete(id);
      }
    }
    for (const trip of trips) drawTrip(trip);
    updateCounts();
    fitFleet();
  }

  // ---- check-ins -------------------------------------------------------------------------

  /** `{trip_id, stop_id, driver_id, arrived_at, checked_in_at, source}` → a list item. */
  function addCheckin(c, atTop) {
    const key = `${c.trip_id}\u0000${c.stop_id}`;
    if (state.checkinKeys.has(key)) return;
    state.checkinKeys.add(key);
    const li = document.createElement("li");
    li.dataset.driverId = c.driver_id;
    li.dataset.tripId = c.trip_id;
    li.dataset.stopId = c.stop_id;
    const time = document.createElement("time");
    time.dateTime = c.checked_in_at;
    time.textContent = new Date(c.checked_in_at).toLocaleTimeString();
    li.append(time, ` ${c.driver_id} at ${c.stop_id} (trip ${c.trip_id}, ${c.source || "auto"})`);
    li.addEventListener("click", () => select(c.driver_id));
    const list = $("checkins");
    if (atTop) list.prepend(li);
    else list.append(li);
    while (list.children.length > MAX_CHECKINS) list.lastElementChild.remove();
  }

  async function loadCheckins() {
    const { checkins } = await api(`/v1/checkins?limit=${MAX_CHECKINS}`);
    for (const c of checkins) addCheckin(c, false);
  }

  // ---- the watch socket ------------------------------------------------------------------

  function setStatus(name, text) {
    $("status").dataset.state = name;
    $("status").textContent = text;
  }

  /** Sends the viewport (and the selected driver) when it changed, or always with `force`. */
  function subscribe(force) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    const bbox = viewportBBox();
    const drivers = state.selected ? [state.selected] : [];
    const key = JSON.stringify([bbox, drivers]);
    if (!force && key === state.subscribed) return;
    state.subscribed = key;
    state.bbox = bbox;
    ws.send(JSON.stringify({ type: "subscribe", bbox, drivers }));
  }

  function onMessage(message) {
    switch (message.type) {
      case "snapshot": {
        state.attempt = 0;
        setStatus("live", "live");
        const keep = new Set(message.positions.map((p) => p.driver_id));
        for (const id of [...state.drivers.keys()]) if (!keep.has(id)) removeDriver(id);
        for (const p of message.positions) upsertDriver(p);
        fitFleet();
        break;
      }
      case "positions":
        for (const p of message.positions) {
          const inScope = inBBox(state.bbox, p.lat, p.lon) || p.driver_id === state.selected;
          if (inScope) upsertDriver(p);
          else removeDriver(p.driver_id);
        }
        break;
      case "event":
        onEvent(message.event);
        break;
      case "error":
        console.warn("hub error", message.code, message.message);
        break;
      default:
        break;
    }
    updateCounts();
    // The first drivers of an empty map: show them.
    if (state.drivers.size > 0 && !state.shownFleet) {
      state.shownFleet = true;
      fitFleet();
    }
  }

  function onEvent(e) {
    switch (e.type) {
      case "driver.offline":
        removeDriver(e.driver_id);
        break;
      case "stop.checked_in":
        setStopStatus(e.trip_id, e.stop_id, "arrived");
        addCheckin(e, true);
        break;
      case "stop.departed":
        setStopStatus(e.trip_id, e.stop_id, "departed");
        break;
      case "trip.completed": {
        const t = state.trips.get(e.trip_id);
        if (t) {
          t.trip.status = "completed";
          drawTrip(t.trip);
        }
        break;
      }
      default:
        break;
    }
  }

  async function connect() {
    clearTimeout(state.reconnectTimer);
    if (!state.token) return signOut("");
    if ($("sign-in").open) $("sign-in").close();
    setStatus(state.attempt ? "reconnecting" : "connecting", state.attempt ? "reconnecting…" : "connecting…");
    try {
      // REST first: it tells a refused token (401) apart from a hub that is down.
      await Promise.all([loadTrips(), loadCheckins()]);
    } catch (e) {
      if (e instanceof Unauthorized) return signOut(`Token refused: ${e.message}`);
      return scheduleReconnect();
    }
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

  // ---- start -----------------------------------------------------------------------------

  fetch("/map/config.json")
    .then((r) => r.json())
    .then((config) => {
      state.config = config;
      if (config.tile_url) {
        L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 19 }).addTo(map);
      }
      state.token = takeToken();
      if (state.token) connect();
      else signOut("");
    });
})();
