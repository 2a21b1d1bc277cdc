// The driver app (served at /driver/): signs in with a driver token, shows the driver's active
// trip, and is the reference client of the driver protocol (/v1/ws/driver, JSON codec):
// - every fix from `navigator.geolocation.watchPosition` goes to the IndexedDB outbox first
//   (outbox.js) and is dropped only when the hub acks it: an ack means committed, so nothing
//   is lost to a reload, a dead zone or a hub restart;
// - waiting fixes are sent oldest first, in batches, on every (re)connect; reconnects back off
//   exponentially with full jitter (1 s to 60 s) so a fleet does not reconnect in step;
// - the hub's sampling hints (`tracking`, asked for with `?tracking=1`) are obeyed: a fix sooner
//   than the hinted interval and nearer than the hinted distance to the last one kept is skipped;
// - the screen is kept on during a trip where the browser allows it (Screen Wake Lock API).
// Everything from the hub is written as text, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "trackhub.driver.token";
  /** A fix older than this is stale (the phone stopped reporting), ms. */
  const STALE_MS = 60_000;
  /** A fix less accurate than this cannot place the driver at a stop, m. */
  const INACCURATE_M = 100;
  /** Most fixes in one frame (the hub takes up to 1,000). */
  const BATCH = 500;
  const MAX_BACKOFF_MS = 60_000;

  const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const fmt = (iso) => clock.format(new Date(iso));

  let token = null;
  let me = null;
  let ws = null;
  let backoff = 1_000;
  let reconnectTimer = null;
  let sentUpTo = null;
  let inflight = [];
  let flushing = false;
  let acked = 0;
  let kept = 0;
  let hint = null;
  let lastKept = null;
  let lastFix = null;
  let positionError = null;
  let trip = null;
  let wakeLock = null;

  // --- sign-in -----------------------------------------------------------------------------

  function claimsOf(t) {
    try {
      const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
    } catch {
      return null;
    }
  }

  /** Why `t` cannot be used, or null. */
  function problemWith(t) {
    const c = claimsOf(t);
    if (!c || typeof c.sub !== "string") return "This is not a trackhub token.";
    if (c.role !== "driver") return `This token is for the role "${c.role}", not a driver.`;
    if (typeof c.exp === "number" && c.exp * 1000 < Date.now()) return "This token has expired: ask for a new one.";
    return null;
  }

  function signIn(t) {
    const problem = problemWith(t);
    if (problem) {
      $("sign-in-error").textContent = problem;
      return false;
    }
    token = t;
    me = claimsOf(t);
    localStorage.setItem(TOKEN_KEY, t);
    document.body.dataset.view = "trip";
    $("sign-in").hidden = true;
    $("trip-view").hidden = false;
    startTracking();
    connect();
    loadTrip();
    return true;
  }

  async function signOut(why) {
    const waiting = await Outbox.count();
    if (!why && waiting > 0 && !confirm(`${waiting} fixes have not reached the hub yet and will be lost. Sign out anyway?`)) {
      return;
    }
    localStorage.removeItem(TOKEN_KEY);
    await Outbox.clear();
    location.hash = "";
    location.reload();
  }

  $("sign-in-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn($("token-input").value.trim());
  });
  $("sign-out").addEventListener("click", () => signOut());

  // --- the hub socket ------------------------------------------------------------------------

  function setHub(state, text) {
    const el = $("hub");
    el.dataset.state = state;
    el.textContent = text;
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (!token || (ws && ws.readyState <= WebSocket.OPEN)) return;
    const problem = problemWith(token);
    if (problem) {
      signOut(problem);
      return;
    }
    if (!navigator.onLine) {
      setHub("offline", "offline (no network)");
      return;
    }
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const sock = new WebSocket(`${proto}//${location.host}/v1/ws/driver?access_token=${encodeURIComponent(token)}&tracking=1`);
    ws = sock;
    setHub("connecting", "connecting…");
    sock.onopen = () => {
      backoff = 1_000;
      sentUpTo = null;
      inflight = [];
      setHub("online", "online");
      flush();
      loadTrip();
    };
    sock.onmessage = (e) => {
      try {
        handle(JSON.parse(e.data));
      } catch (err) {
        console.error("bad message from the hub", err);
      }
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      sentUpTo = null;
      inflight = [];
      if (!navigator.onLine) {
        setHub("offline", "offline (no network)");
        return;
      }
      const delay = Math.round(backoff / 2 + Math.random() * (backoff / 2));
      backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
      setHub("unreachable", `hub unreachable: retrying in ${Math.ceil(delay / 1000)} s`);
      reconnectTimer = setTimeout(connect, delay);
    };
  }

  function handle(msg) {
    switch (msg.type) {
      case "ack": {
        const done = inflight.filter((s) => s <= msg.seq).length;
        inflight = inflight.filter((s) => s > msg.seq);
        acked += done;
        Outbox.ack(msg.seq).then(refreshCounts);
        break;
      }
      case "error":
        if (msg.code === "unavailable") {
          // The hub is under pressure and kept nothing of the frame: send again later, from
          // the oldest waiting fix.
          setTimeout(() => {
            sentUpTo = null;
            inflight = [];
            flush();
          }, msg.retry_after_ms ?? 5_000);
        }
        // Otherwise a fix was invalid: the hub's ack covers its seq, nothing to resend.
        console.warn("hub error", msg.code, msg.message);
        break;
      case "checkin":
        checkedIn(msg);
        break;
      case "tracking":
        hint = msg;
        $("sampling").textContent = msg.sampling === "dense"
          ? `every ${msg.interval_s} s (near a stop)`
          : msg.sampling === "sparse"
            ? `every ${msg.interval_s} s or ${msg.distance_m} m`
            : `every ${msg.interval_s} s (no stop ahead)`;
        $("sampling").dataset.sampling = msg.sampling;
        break;
      default:
        break;
    }
  }

  /** Sends the waiting fixes this socket has not sent yet, oldest first. */
  async function flush() {
    if (flushing) return;
    flushing = true;
    try {
      while (ws && ws.readyState === WebSocket.OPEN) {
        const batch = await Outbox.after(sentUpTo, BATCH);
        if (!batch.length || !ws || ws.readyState !== WebSocket.OPEN) break;
        const pings = batch.map((f) => ({
          type: "ping",
          seq: f.seq,
          ts: f.ts,
          lat: f.lat,
          lon: f.lon,
          accuracy_m: f.accuracy_m,
          speed_mps: f.speed_mps,
          heading_deg: f.heading_deg,
        }));
        ws.send(JSON.stringify(pings.length === 1 ? pings[0] : { type: "batch", pings }));
        sentUpTo = batch[batch.length - 1].seq;
        inflight.push(...batch.map((f) => f.seq));
      }
    } catch (err) {
      console.error("sending fixes", err);
    } finally {
      flushing = false;
    }
  }

  async function refreshCounts() {
    const waiting = await Outbox.count();
    $("acked").textContent = String(acked);
    $("pending").textContent = String(waiting);
    $("pending").dataset.count = String(waiting);
    document.body.dataset.kept = String(kept);
    document.body.dataset.acked = String(acked);
    renderWarnings(waiting);
  }

  window.addEventListener("offline", () => {
    setHub("offline", "offline (no network)");
    ws?.close();
  });
  window.addEventListener("online", () => {
    backoff = 1_000;
    connect();
  });

  // --- position ------------------------------------------------------------------------------

  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

  function metres(a, b) {
    const r = 6_371_008.8;
    const rad = Math.PI / 180;
    const dlat = (b.lat - a.lat) * rad;
    const dlon = (b.lon - a.lon) * rad;
    const h = Math.sin(dlat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dlon / 2) ** 2;
    return 2 * r * Math.asin(Math.sqrt(h));
  }

  /** True when the hub's hint does not need `fix` (too soon and too near the last one kept). */
  function notNeeded(fix) {
    if (!hint || !lastKept) return false;
    const soon = fix.ts - lastKept.ts < hint.interval_s * 1000;
    const near = hint.distance_m === 0 || metres(lastKept, fix) < hint.distance_m;
    return soon && near;
  }

  function onPosition(p) {
    const c = p.coords;
    const accuracy = num(c.accuracy);
    const speed = num(c.speed);
    const heading = num(c.heading);
    const fix = {
      ts: Math.round(p.timestamp),
      lat: c.latitude,
      lon: c.longitude,
      accuracy_m: accuracy !== undefined && accuracy >= 0 ? accuracy : undefined,
      speed_mps: speed !== undefined && speed >= 0 ? speed : undefined,
      heading_deg: heading !== undefined && heading >= 0 ? heading % 360 : undefined,
    };
    positionError = null;
    lastFix = { fix, at: Date.now() };
    showPosition();
    drawMe(fix);
    if (notNeeded(fix)) return;
    lastKept = fix;
    kept += 1;
    Outbox.add(fix).then(() => {
      refreshCounts();
      flush();
    }).catch((err) => console.error("storing a fix", err));
  }

  function onPositionError(err) {
    positionError = err.code === err.PERMISSION_DENIED ? "denied" : "unavailable";
    showPosition();
  }

  function startTracking() {
    if (!("geolocation" in navigator)) {
      positionError = "unsupported";
      showPosition();
      return;
    }
    navigator.geolocation.watchPosition(onPosition, onPositionError, {
      enableHighAccuracy: true,
      maximumAge: 0,
      timeout: 60_000,
    });
  }

  function positionState() {
    if (positionError) return positionError;
    if (!lastFix) return "waiting";
    if (Date.now() - lastFix.at > STALE_MS) return "stale";
    if ((lastFix.fix.accuracy_m ?? 0) > INACCURATE_M) return "inaccurate";
    return "ok";
  }

  function showPosition() {
    const state = positionState();
    const el = $("position");
    el.dataset.state = state;
    const f = lastFix?.fix;
    el.textContent = {
      denied: "blocked: allow location for this site in the browser's settings",
      unavailable: "no fix: the phone cannot find its position",
      unsupported: "this browser cannot share a position",
      waiting: "waiting for the first fix…",
      stale: `no fix for ${Math.round((Date.now() - (lastFix?.at ?? 0)) / 1000)} s`,
      inaccurate: `inaccurate (±${Math.round(f?.accuracy_m ?? 0)} m)`,
      ok: `±${Math.round(f?.accuracy_m ?? 0)} m at ${clock.format(new Date(f?.ts ?? 0))}`,
    }[state];
    renderWarnings();
  }
  setInterval(showPosition, 5_000);

  let lastWaiting = 0;
  function renderWarnings(waiting = lastWaiting) {
    lastWaiting = waiting;
    const out = [];
    const state = positionState();
    if (state === "denied") out.push("Location is blocked: nothing is sent and no check-in can happen. Allow location for this site.");
    if (state === "stale") out.push("No position for a while: is location turned on?");
    if (state === "inaccurate") out.push("Position is inaccurate: automatic check-in may wait. Use the button at the stop.");
    const hub = $("hub").dataset.state;
    if (hub !== "online" && token) out.push(`Hub unreachable: ${waiting} fixes waiting on this phone, sent when it is back.`);
    $("warnings").textContent = out.join(" ");
    $("warnings").hidden = out.length === 0;
  }

  // --- the trip ------------------------------------------------------------------------------

  async function api(method, path) {
    const r = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` } });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error(body?.detail || r.statusText);
      err.status = r.status;
      throw err;
    }
    return body;
  }

  async function loadTrip() {
    if (!token) return;
    try {
      const { trips } = await api("GET", `/v1/drivers/${encodeURIComponent(me.sub)}/trips`);
      trip = trips[0] || null;
      renderTrip();
    } catch (err) {
      if (err.status === 401) signOut("Your sign-in has expired.");
    }
  }
  setInterval(loadTrip, 15_000);

  const STATUS_TEXT = { pending: "to do", arrived: "checked in", departed: "done" };

  function renderTrip() {
    const list = $("stops");
    list.replaceChildren();
    $("no-trip").hidden = !!trip;
    $("next").hidden = !trip;
    if (!trip) {
      $("progress").textContent = "";
      releaseWake();
      return;
    }
    const done = trip.stops.filter((s) => s.status !== "pending").length;
    $("progress").textContent = `(${done}/${trip.stops.length})`;
    for (const s of trip.stops) {
      const li = document.createElement("li");
      li.dataset.stop = s.id;
      li.dataset.status = s.status;
      const name = document.createElement("strong");
      name.textContent = s.name || s.id;
      const info = document.createElement("span");
      const parts = [STATUS_TEXT[s.status] || s.status];
      if (s.checked_in_at) parts.push(`at ${fmt(s.checked_in_at)}`);
      if (s.status === "pending" && s.eta) parts.push(`ETA ${fmt(s.eta)}`);
      if (s.late) parts.push("late");
      info.textContent = ` · ${parts.join(" · ")}`;
      li.append(name, info);
      list.append(li);
    }
    const next = trip.stops.find((s) => s.status === "pending");
    $("next-name").textContent = next ? (next.name || next.id) : "All stops done";
    $("next-eta").textContent = next?.eta ? `ETA ${fmt(next.eta)}${next.late ? " (late)" : ""}` : "";
    $("check-in").hidden = !next;
    $("check-in").dataset.stop = next?.id ?? "";
    drawStop(next);
    keepAwake();
  }

  function checkedIn(msg) {
    const stop = trip?.stops.find((s) => s.id === msg.stop_id);
    const el = $("checked-in");
    el.textContent = `Checked in at ${stop?.name || msg.stop_id} at ${fmt(msg.checked_in_at)}`;
    el.dataset.stop = msg.stop_id;
    loadTrip();
  }

  $("check-in").addEventListener("click", async () => {
    const stopId = $("check-in").dataset.stop;
    if (!trip || !stopId) return;
    const button = $("check-in");
    button.disabled = true;
    try {
      const r = await fetch(`/v1/trips/${encodeURIComponent(trip.id)}/stops/${encodeURIComponent(stopId)}/checkin`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}` },
      });
      if (r.status === 201) {
        const c = await r.json();
        checkedIn({ stop_id: stopId, checked_in_at: c.checked_in_at ?? new Date().toISOString() });
      } else if (r.status === 409) {
        loadTrip();
      } else {
        $("checked-in").textContent = `Check-in failed: ${(await r.json().catch(() => null))?.detail || r.status}`;
      }
    } catch {
      $("checked-in").textContent = "Check-in failed: the hub is unreachable. Try again in a moment.";
    } finally {
      button.disabled = false;
    }
  });

  // --- the map -------------------------------------------------------------------------------

  const map = L.map("map", { zoomControl: false, attributionControl: true });
  map.setView([0, 0], 2);
  fetch("/map/config.json").then((r) => r.json()).then((config) => {
    if (config.tile_url) {
      L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 19 }).addTo(map);
    }
  }).catch(() => {});
  let stopLayer = null;
  let meMarker = null;
  let shownStop = null;

  function drawStop(stop) {
    if (shownStop === (stop?.id ?? null)) return;
    shownStop = stop?.id ?? null;
    stopLayer?.remove();
    stopLayer = null;
    if (!stop) return;
    stopLayer = L.layerGroup([
      L.circle([stop.lat, stop.lon], { radius: stop.radius_m, color: "#0b5cad", weight: 2 }),
      L.circleMarker([stop.lat, stop.lon], { radius: 6, color: "#0b5cad", fillOpacity: 1 }),
    ]).addTo(map);
    const points = [[stop.lat, stop.lon]];
    if (lastFix) points.push([lastFix.fix.lat, lastFix.fix.lon]);
    map.fitBounds(L.latLngBounds(points).pad(0.5), { maxZoom: 17 });
    setTimeout(() => map.invalidateSize(), 0);
  }

  function drawMe(fix) {
    if (!meMarker) {
      meMarker = L.circleMarker([fix.lat, fix.lon], { radius: 7, color: "#fff", weight: 2, fillColor: "#d33", fillOpacity: 1 }).addTo(map);
      if (!stopLayer) map.setView([fix.lat, fix.lon], 16);
    } else {
      meMarker.setLatLng([fix.lat, fix.lon]);
    }
  }

  // --- screen and install ----------------------------------------------------------------------

  async function keepAwake() {
    const el = $("wake");
    if (!("wakeLock" in navigator)) {
      el.textContent = "this browser cannot keep the screen on: keep it on yourself";
      return;
    }
    if (!trip || wakeLock || document.visibilityState !== "visible") return;
    try {
      wakeLock = await navigator.wakeLock.request("screen");
      el.textContent = "kept on during the trip";
      wakeLock.addEventListener("release", () => {
        wakeLock = null;
        el.textContent = "may turn off (the page was hidden)";
      });
    } catch (err) {
      el.textContent = `cannot be kept on (${err.name})`;
    }
  }

  function releaseWake() {
    wakeLock?.release();
    wakeLock = null;
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") {
      keepAwake();
      connect();
    }
  });

  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/driver/sw.js", { scope: "/driver/" }).catch((err) => console.warn("no offline support", err));
  }

  // --- start ---------------------------------------------------------------------------------

  const fromAddress = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromAddress) history.replaceState(null, "", location.pathname);
  const saved = fromAddress || localStorage.getItem(TOKEN_KEY);
  if (saved && !signIn(saved)) {
    localStorage.removeItem(TOKEN_KEY);
  }
  refreshCounts();
})();
