// What the map draws live: drivers (clustered with Leaflet.markercluster, a heading arrow while
// moving, the id on hover or at zoom ≥ LABEL_ZOOM), active trips with their stops and each
// stop's geofence ring, and the fleet's geofences.
import { clock, el } from "./api.js";

/** Ids beside markers from this zoom on, each only where it fits (see `placeLabels`). */
const LABEL_ZOOM = 15;
/** Label box estimate: 11 px system-ui is about 6.3 px a character; 14 px high; 15 px right of
 * the marker's centre (app.css `.driver-dot .label`). */
const LABEL_CHAR_PX = 6.3;
const LABEL_HEIGHT_PX = 14;
const LABEL_LEFT_PX = 8;
/** Labels are re-placed at most this often while markers move, ms. */
const LABEL_EVERY_MS = 250;
/** Every stop's ring (its geofence radius, m) from this zoom on; the trip shown in the trip
 * panel has its rings at any zoom. Below it, dozens of overlapping rings hide the map. */
const RING_ZOOM = 18;
/** Below this speed a heading is noise (GPS course while parked), m/s. */
const HEADING_MIN_SPEED_MPS = 1;
/** Re-clustering more markers than this goes through the cluster group's bulk remove/add (one
 * re-cluster) instead of one `setLatLng` each (one remove + add each). */
const BULK_UPDATE = 50;
/** Markers inside clusters move this often, ms (see `flush`)… */
const CLUSTERED_EVERY_MS = 2_000;
/** …and only once their driver is this far from where the marker is, px at the current zoom
 * (less cannot change which cluster shows it); the rest move when the zoom changes. */
const RECLUSTER_PX = 8;
const STOP_COLOURS = { pending: "#1e88e5", approaching: "#f9a825", late: "#c62828", arrived: "#2e7d32", departed: "#8d8d8d" };

/** The status a stop shows: `late` and `approaching` are flags of a pending stop. */
export function stopState(s) {
  if (s.status !== "pending") return s.status;
  if (s.late) return "late";
  if (s.approaching) return "approaching";
  return "pending";
}

/** Phones that send no heading (or a replayed trace) still get an arrow: the initial bearing
 * from the previous drawn position to this one, once it moved COURSE_MIN_M (GPS jitter of a
 * parked phone moves it less), else the last course; `null` after a stop. Degrees from north. */
const COURSE_MIN_M = 15;
function course(from, to, last) {
  if (!from) return null;
  const rad = Math.PI / 180;
  const dLat = (to.lat - from.lat) * rad;
  const dLon = (to.lon - from.lon) * rad;
  const x = dLon * Math.cos(((from.lat + to.lat) / 2) * rad);
  const metres = Math.hypot(x, dLat) * 6_371_000; // equirectangular: fine over a few hundred m
  if (metres < COURSE_MIN_M) return (to.speed_mps ?? 0) >= HEADING_MIN_SPEED_MPS ? last : null;
  const y = Math.sin(dLon) * Math.cos(to.lat * rad);
  const z = Math.cos(from.lat * rad) * Math.sin(to.lat * rad) - Math.sin(from.lat * rad) * Math.cos(to.lat * rad) * Math.cos(dLon);
  return (Math.atan2(y, z) / rad + 360) % 360; // forward azimuth (Movable Type, "Calculate distance, bearing…")
}

export function createLive(map, ctx) {
  const clusters = L.markerClusterGroup({
    chunkedLoading: true,
    showCoverageOnHover: false,
    maxClusterRadius: 45,
    disableClusteringAtZoom: 17,
  }).addTo(map);
  const tripLayer = L.layerGroup().addTo(map);
  const stopLayer = L.layerGroup().addTo(map);
  const ringLayer = L.layerGroup();
  const focusLayer = L.layerGroup().addTo(map);
  const zoneLayer = L.layerGroup().addTo(map);
  /** driver id → { marker, dot, heading, position, status } */
  const drivers = new Map();
  /** trip id → { trip, line, stops: Map(stop id → circle marker) } */
  const trips = new Map();
  /** driver id → position, applied on the next animation frame (many frames, one redraw). */
  const pending = new Map();
  /** driver id → driver whose marker waits inside a cluster for the next `recluster`. */
  const clustered = new Map();
  let reclusterTimer = null;
  /** Drivers inside clusters whose marker lags their position by less than RECLUSTER_PX. */
  const stale = new Set();
  let frameQueued = false;

  function showLayersForZoom() {
    const z = map.getZoom();
    map.getContainer().classList.toggle("show-labels", z >= LABEL_ZOOM);
    if (z >= RING_ZOOM) ringLayer.addTo(map);
    else ringLayer.remove();
    placeLabels();
  }
  map.on("zoomend", showLayersForZoom);
  // A new zoom re-clusters: every marker first goes where its driver is.
  map.on("zoomstart", () => {
    for (const d of stale) clustered.set(d.id, d);
    stale.clear();
    recluster();
  });
  map.on("moveend", () => placeLabels());

  /** Labels only where they fit: greedily, in id order, a marker's label shows when its box
   * (estimated from the marker's pixel position, no DOM reads) overlaps no marker and no label
   * already placed. Markers in clusters are not in the DOM and take no room. */
  let labelsPlacedAt = 0;
  let labelsTimer = null;
  function placeLabels() {
    clearTimeout(labelsTimer);
    labelsTimer = null;
    labelsPlacedAt = performance.now();
    if (map.getZoom() < LABEL_ZOOM) return;
    const shown = [];
    for (const d of drivers.values()) {
      if (!d.dot.isConnected) continue;
      const c = map.latLngToContainerPoint(d.marker.getLatLng());
      shown.push({ d, x: c.x, y: c.y });
    }
    shown.sort((a, b) => (a.d.id < b.d.id ? -1 : 1));
    const taken = shown.map(({ x, y }) => [x - 7, y - 7, x + 7, y + 7]);
    // Cluster icons (40 px) take room too; Leaflet keeps each icon's layer point on it.
    for (const icon of map.getContainer().querySelectorAll(".marker-cluster")) {
      if (!icon._leaflet_pos) continue;
      const c = map.layerPointToContainerPoint(icon._leaflet_pos);
      taken.push([c.x - 20, c.y - 20, c.x + 20, c.y + 20]);
    }
    const overlaps = (b) => taken.some((t) => b[0] < t[2] && b[2] > t[0] && b[1] < t[3] && b[3] > t[1]);
    for (const { d, x, y } of shown) {
      const box = [x + LABEL_LEFT_PX, y - LABEL_HEIGHT_PX / 2, x + LABEL_LEFT_PX + d.id.length * LABEL_CHAR_PX, y + LABEL_HEIGHT_PX / 2];
      const fits = !overlaps(box);
      d.label.classList.toggle("crowded", !fits);
      if (fits) taken.push(box);
    }
  }
  /** After markers moved: place labels again, at most every LABEL_EVERY_MS. */
  function placeLabelsSoon() {
    if (labelsTimer || map.getZoom() < LABEL_ZOOM) return;
    labelsTimer = setTimeout(placeLabels, Math.max(0, LABEL_EVERY_MS - (performance.now() - labelsPlacedAt)));
  }

  function makeDriver(id) {
    const heading = el("span", "heading");
    const label = el("span", "label", id);
    const dot = el("div", "driver-dot", heading, label);
    dot.dataset.driverId = id;
    const marker = L.marker([0, 0], {
      icon: L.divIcon({ className: "driver-marker", html: dot, iconSize: [14, 14], iconAnchor: [7, 7] }),
      keyboard: false,
      title: id,
    });
    marker.bindTooltip(id, { direction: "right", offset: [8, 0] });
    marker.on("click", () => ctx.follow(id));
    const d = { id, marker, dot, heading, label, position: null, status: "moving", added: false };
    drivers.set(id, d);
    return d;
  }

  function paint(d) {
    const p = d.position;
    d.dot.dataset.lat = String(p.lat);
    d.dot.dataset.lon = String(p.lon);
    d.dot.dataset.ts = p.ts;
    const moving = p.speed_mps == null || p.speed_mps >= HEADING_MIN_SPEED_MPS;
    const heading = p.heading_deg ?? d.course;
    const arrow = heading != null && moving && d.status !== "offline";
    d.dot.classList.toggle("has-heading", arrow);
    if (arrow) d.heading.style.transform = `rotate(${Math.round(heading)}deg)`;
    d.dot.classList.toggle("stopped", d.status === "stopped");
    d.dot.classList.toggle("offline", d.status === "offline");
    d.dot.classList.toggle("selected", ctx.selected === d.id);
  }

  /** Markers drawn on their own move at once (one `setLatLng`, which the cluster group turns
   * into one remove + add); markers inside a cluster or out of view wait for the next
   * re-cluster, every CLUSTERED_EVERY_MS, all in one bulk remove/add: a cluster's count and
   * place barely change in 2 s, and re-clustering every frame cost a long task per frame. */
  function flush() {
    frameQueued = false;
    const added = [];
    for (const [id, p] of pending) {
      const d = drivers.get(id) || makeDriver(id);
      d.course = course(d.position, p, d.course);
      d.position = p;
      paint(d);
      if (!d.added) {
        d.added = true;
        d.marker.setLatLng([p.lat, p.lon]);
        added.push(d.marker);
      } else if (clusters.getVisibleParent(d.marker) === d.marker) {
        d.marker.setLatLng([p.lat, p.lon]);
      } else if (map.project(d.marker.getLatLng()).distanceTo(map.project([p.lat, p.lon])) < RECLUSTER_PX) {
        stale.add(d); // cannot change what the cluster shows at this zoom: moved on zoom
      } else {
        clustered.set(id, d);
        if (!reclusterTimer) reclusterTimer = setTimeout(recluster, CLUSTERED_EVERY_MS);
      }
    }
    if (added.length) clusters.addLayers(added);
    pending.clear();
    placeLabelsSoon();
    ctx.onDriversDrawn?.();
  }

  /** Moves the markers that waited inside clusters: one bulk remove/add. */
  function recluster() {
    clearTimeout(reclusterTimer);
    reclusterTimer = null;
    const markers = [];
    for (const d of clustered.values()) {
      stale.delete(d);
      if (drivers.get(d.id) === d) markers.push(d.marker);
    }
    clustered.clear();
    if (markers.length > BULK_UPDATE) clusters.removeLayers(markers);
    for (const m of markers) {
      const p = drivers.get(m.options.title).position;
      m.setLatLng([p.lat, p.lon]);
    }
    if (markers.length > BULK_UPDATE) clusters.addLayers(markers);
    placeLabelsSoon();
  }

  /** Queues positions (`PositionView`s) for the next animation frame. */
  function upsert(positions) {
    for (const p of positions) pending.set(p.driver_id, p);
    if (!frameQueued && pending.size) {
      frameQueued = true;
      requestAnimationFrame(flush);
    }
  }

  function remove(id) {
    pending.delete(id);
    clustered.delete(id);
    const d = drivers.get(id);
    if (!d) return;
    stale.delete(d);
    if (d.added) clusters.removeLayer(d.marker);
    drivers.delete(id);
  }

  /** Keeps only these drivers (a snapshot). */
  function retain(ids) {
    for (const id of [...drivers.keys()]) if (!ids.has(id)) remove(id);
  }

  /** Sets a driver's status (`moving` | `stopped` | `offline`) as the drivers panel knows it. */
  function setStatus(id, status) {
    const d = drivers.get(id);
    if (!d || d.status === status) return;
    d.status = status;
    if (d.position) paint(d);
  }

  function repaintSelection() {
    for (const d of drivers.values()) if (d.position) paint(d);
  }

  /** Pans to the driver, opening its cluster when it is in one. */
  function reveal(id, zoom) {
    const d = drivers.get(id);
    if (!d?.position) return false;
    if (zoom && map.getZoom() < zoom) map.setView([d.position.lat, d.position.lon], zoom);
    else map.panTo([d.position.lat, d.position.lon]);
    return true;
  }

  // ---- trips, stops, rings ------------------------------------------------------------------

  function drawTrip(trip) {
    eraseTrip(trip.id);
    const active = trip.status === "active";
    const focused = ctx.trip?.current === trip.id;
    const line = L.polyline(trip.stops.map((s) => [s.lat, s.lon]), {
      color: focused ? "#d81b60" : active ? "#1565c0" : "#9e9e9e",
      weight: focused ? 4 : 2,
      dashArray: active && !focused ? "6 6" : null,
      opacity: focused ? 0.9 : 0.6,
      interactive: false,
    }).addTo(tripLayer);
    line.getElement()?.setAttribute("data-trip-id", trip.id);
    line.getElement()?.setAttribute("data-trip-status", trip.status);
    const stops = new Map();
    const rings = [];
    const ringsTo = focused ? focusLayer : ringLayer;
    for (const s of trip.stops) {
      const state = stopState(s);
      const circle = L.circleMarker([s.lat, s.lon], {
        radius: 6, color: "#fff", weight: 1.5, fillColor: STOP_COLOURS[state], fillOpacity: 0.95,
      }).addTo(stopLayer);
      // Text nodes, never HTML: stop names and ids come from API clients (issue 16).
      const tip = el("div", null, `${s.name || s.id} · ${state}`, el("br"), `trip ${trip.id} · driver ${trip.driver_id}`);
      if (s.eta) tip.append(el("br"), `ETA ${clock(s.eta)}`);
      circle.bindTooltip(tip);
      circle.on("click", () => ctx.openTrip(trip.id, s.id));
      const e = circle.getElement();
      e?.setAttribute("data-trip-id", trip.id);
      e?.setAttribute("data-stop-id", s.id);
      e?.setAttribute("data-stop-status", s.status);
      e?.setAttribute("data-stop-state", state);
      stops.set(s.id, circle);
      // The geofence detection uses: the stop's radius (m), dashed.
      const ring = L.circle([s.lat, s.lon], {
        radius: s.radius_m, color: STOP_COLOURS[state], weight: 1, dashArray: "3 4", fill: false, interactive: false,
      }).addTo(ringsTo);
      ring.on("add", () => ring.getElement()?.setAttribute("data-ring-of", s.id));
      ring.getElement()?.setAttribute("data-ring-of", s.id);
      rings.push(ring);
    }
    trips.set(trip.id, { trip, line, stops, rings });
  }

  function eraseTrip(id) {
    const old = trips.get(id);
    if (!old) return;
    tripLayer.removeLayer(old.line);
    for (const c of old.stops.values()) stopLayer.removeLayer(c);
    for (const r of old.rings) {
      ringLayer.removeLayer(r);
      focusLayer.removeLayer(r);
    }
    trips.delete(id);
  }

  // ---- geofences ----------------------------------------------------------------------------

  function drawZones(geofences) {
    zoneLayer.clearLayers();
    const style = { color: "#6a1b9a", weight: 1.5, fillOpacity: 0.06, interactive: true };
    for (const g of geofences) {
      const layer = g.circle
        ? L.circle([g.circle.center[1], g.circle.center[0]], { ...style, radius: g.circle.radius_m })
        : L.geoJSON(g.geometry, { style });
      layer.bindTooltip(el("span", null, `geofence ${g.name || g.id}`));
      layer.addTo(zoneLayer);
      const setId = (l) => l.getElement?.()?.setAttribute("data-geofence-id", g.id);
      if (layer.eachLayer) layer.eachLayer(setId);
      else setId(layer);
    }
  }

  /** A stop's name from the trips drawn, else `null`. */
  function stopName(tripId, stopId) {
    return trips.get(tripId)?.trip.stops.find((s) => s.id === stopId)?.name || null;
  }

  showLayersForZoom();
  return { stopName, drivers, trips, clusters, upsert, remove, retain, setStatus, repaintSelection, reveal, drawTrip, eraseTrip, drawZones };
}
