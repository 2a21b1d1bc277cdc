// History playback: one driver's stored track over a time range (`GET /v1/drivers/{id}/track`),
// its automatic stops (`GET /v1/drivers/{id}/report`) and check-ins in the range, drawn on the
// map; a slider scrubs a marker along the track, Play runs it at PLAY_POINTS_PER_S.
import { clock, el, enc } from "./api.js";
import { describeEvidence } from "./trip.js";

const PLAY_POINTS_PER_S = 20;

/** `datetime-local` value (local time, seconds) of a unix ms. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

export function createHistory(map, ctx) {
  const $ = (id) => document.getElementById(id);
  // Its own pane above the live layers: the played-back track must not drown under today's
  // trips and stops.
  map.createPane("history").style.zIndex = 450;
  const layer = L.layerGroup().addTo(map);
  let track = null;
  let player = null;
  let marker = null;

  /** Prefills the form: this driver, the hour before `lastTs` (its newest fix). */
  function prefill(id, lastTs) {
    const to = lastTs ? Date.parse(lastTs) + 60_000 : Date.now();
    $("history-driver").value = id;
    $("history-from").value = localInput(to - 3_600_000);
    $("history-to").value = localInput(to);
  }

  function at(i) {
    if (!track || !track.count) return;
    const [lon, lat] = track.coordinates[i];
    marker.setLatLng([lat, lon]);
    const speed = track.speed[i];
    $("history-at").value = `${clock(track.timestamps[i])}` + (speed != null ? ` · ${(speed * 3.6).toFixed(0)} km/h` : "");
    $("history-at").dataset.index = String(i);
    marker.getElement()?.setAttribute("data-ts", track.timestamps[i]);
  }

  function stopPlaying() {
    clearInterval(player);
    player = null;
    $("history-play").textContent = "Play";
  }

  async function load(e) {
    e?.preventDefault();
    stopPlaying();
    layer.clearLayers();
    $("history-error").textContent = "";
    const id = $("history-driver").value.trim();
    const from = Date.parse($("history-from").value);
    const to = Date.parse($("history-to").value);
    if (!id || !(from < to)) {
      $("history-error").textContent = "A driver and a range whose start is before its end.";
      return;
    }
    const range = `from=${from}&to=${to}`;
    try {
      const [feature, report, { checkins }] = await Promise.all([
        ctx.api.get(`/v1/drivers/${enc(id)}/track?${range}&limit=50000`),
        ctx.api.get(`/v1/drivers/${enc(id)}/report?${range}`),
        ctx.api.get(`/v1/checkins?driver_id=${enc(id)}&limit=1000`),
      ]);
      const p = feature.properties;
      track = { count: p.count, coordinates: feature.geometry.coordinates, timestamps: p.timestamps, speed: p.speed_mps };
      if (!track.count) {
        $("history-error").textContent = `No fixes of ${id} in that range.`;
        $("history-player").hidden = true;
        return;
      }
      const line = L.polyline(track.coordinates.map(([lon, lat]) => [lat, lon]), { color: "#6a1b9a", weight: 4, opacity: 0.9, pane: "history" }).addTo(layer);
      line.getElement()?.setAttribute("data-history-of", id);
      const items = [];
      for (const s of report.stops) {
        L.circleMarker([s.lat, s.lon], { radius: 7, color: "#6a1b9a", weight: 2, fillColor: "#fff", fillOpacity: 0.9, pane: "history" })
          .bindTooltip(el("span", null, `stopped ${clock(s.from)}–${s.to ? clock(s.to) : "now"}`)).addTo(layer);
        const li = el("li", null, el("span", "name", s.unplanned ? "unplanned stop" : "stop"),
          ` ${clock(s.from)}–${s.to ? clock(s.to) : "now"}`);
        li.dataset.kind = "stop";
        li.dataset.from = s.from;
        items.push([Date.parse(s.from), li]);
      }
      for (const c of checkins) {
        const t = Date.parse(c.checked_in_at);
        if (t < from || t > to) continue;
        const li = el("li", null, el("span", "name", `checked in at ${c.stop_id}`), ` ${clock(c.checked_in_at)}`,
          el("div", "evidence", describeEvidence(c.evidence, c.source)));
        li.dataset.kind = "checkin";
        li.dataset.tripId = c.trip_id;
        li.addEventListener("click", () => ctx.openTrip(c.trip_id, c.stop_id));
        items.push([t, li]);
      }
      // Each item scrubs the slider to its time.
      for (const [t, li] of items) {
        li.tabIndex = 0;
        li.addEventListener("click", () => {
          const i = track.timestamps.findIndex((ts) => Date.parse(ts) >= t);
          $("history-slider").value = String(Math.max(0, i));
          at(Math.max(0, i));
        });
      }
      $("history-stops").replaceChildren(...items.sort((a, b) => a[0] - b[0]).map(([, li]) => li));
      marker = L.marker(track.coordinates[0].slice().reverse(), {
        icon: L.divIcon({ className: "history-marker", iconSize: [12, 12] }), keyboard: false, interactive: false, pane: "history",
      }).addTo(layer);
      $("history-slider").max = String(track.count - 1);
      $("history-slider").value = "0";
      $("history-summary").textContent = `${track.count} fixes · ${(report.distance_m / 1000).toFixed(1)} km · `
        + `${report.stops.length} stop${report.stops.length === 1 ? "" : "s"} (${Math.round(report.stopped_s / 60)} min stopped)`;
      $("history-player").hidden = false;
      at(0);
      map.fitBounds(line.getBounds().pad(0.1), { maxZoom: 16 });
      ctx.stopFollowing();
    } catch (err) {
      $("history-error").textContent = `History of ${id}: ${err.message}`;
    }
  }

  $("history-form").addEventListener("submit", load);
  $("history-slider").addEventListener("input", () => at(Number($("history-slider").value)));
  $("history-play").addEventListener("click", () => {
    if (player) return stopPlaying();
    $("history-play").textContent = "Pause";
    player = setInterval(() => {
      const next = Number($("history-slider").value) + 1;
      if (!track || next >= track.count) return stopPlaying();
      $("history-slider").value = String(next);
      at(next);
    }, 1000 / PLAY_POINTS_PER_S);
  });

  return { prefill, load };
}
