// The trip panel: one trip's stops as a timeline (pending / approaching / late / arrived /
// departed) with windows, ETAs and actual times, why each check-in happened (its evidence from
// `GET /v1/checkins`), the manual check-in fallback, and customer tracking links.
import { clock, el, enc } from "./api.js";
import { stopState } from "./live.js";

/** ETAs move every few seconds; the panel re-reads its trip this often while shown, ms. */
const REFRESH_MS = 10_000;

/** `dwell: 16 fixes over 75 s`, … (see `store::evidence`). */
export function describeEvidence(e, source) {
  if (!e) return source === "manual" ? "checked in by hand" : "automatic (stored before evidence was kept)";
  switch (e.kind) {
    case "dwell":
      return `stationary inside: ${e.fixes} fixes over ${Math.round(e.span_s)} s`
        + (e.credited_s ? ` (+${Math.round(e.credited_s)} s credited to a sparse phone)` : "");
    case "quiet_gap":
      return `phone went quiet inside for ${Math.round(e.gap_s)} s and reappeared ${Math.round(e.moved_m)} m away`;
    case "device_still":
      return `the phone reported itself still inside, ${e.fixes} fixes into a dwell`;
    case "manual":
      return "checked in by hand (dispatcher or driver)";
    default:
      return e.kind;
  }
}

export function createTripPanel(ctx) {
  const $ = (id) => document.getElementById(id);
  let current = null;
  let timer = null;

  function window_(s) {
    if (!s.window_start && !s.window_end) return null;
    return `window ${clock(s.window_start) || "…"}–${clock(s.window_end) || "…"}`;
  }

  function stopItem(trip, s, checkin) {
    const state = stopState(s);
    const li = el("li", null);
    li.dataset.stopId = s.id;
    li.dataset.state = state;
    li.append(el("div", null, el("span", "name", s.name || s.id), el("span", `badge ${state}`, state)));
    const times = [window_(s)];
    if (s.eta) times.push(`ETA ${clock(s.eta)}`);
    if (s.arrived_at) times.push(`arrived ${clock(s.arrived_at)}`);
    if (s.checked_in_at) times.push(`checked in ${clock(s.checked_in_at)}`);
    if (s.departed_at) times.push(`left ${clock(s.departed_at)}`);
    li.append(el("div", "meta", times.filter(Boolean).join(" · ") || "no times yet"));
    if (checkin) li.append(el("div", "evidence", `why: ${describeEvidence(checkin.evidence, checkin.source)}`));
    if (s.status === "pending") {
      const checkIn = el("button", null, "Check in");
      checkIn.type = "button";
      checkIn.setAttribute("aria-label", `Check in at ${s.name || s.id} by hand`);
      checkIn.addEventListener("click", () => manualCheckin(trip, s, checkIn));
      const link = el("button", null, "Tracking link");
      link.type = "button";
      link.setAttribute("aria-label", `Create a customer tracking link for ${s.name || s.id}`);
      link.addEventListener("click", () => createLink(trip, s, link));
      li.append(el("div", null, checkIn, link));
    }
    return li;
  }

  async function manualCheckin(trip, s, button) {
    button.disabled = true;
    try {
      await ctx.api.post(`/v1/trips/${enc(trip.id)}/stops/${enc(s.id)}/checkin`);
      $("trip-error").textContent = "";
    } catch (e) {
      $("trip-error").textContent = `Check-in refused: ${e.message}`;
    }
    await load(trip.id);
  }

  async function createLink(trip, s, button) {
    button.disabled = true;
    try {
      const link = await ctx.api.post(`/v1/trips/${enc(trip.id)}/stops/${enc(s.id)}/links`);
      $("link-stop").textContent = s.name || s.id;
      $("link-url").value = new URL(link.url, location.origin).href;
      $("link-box").hidden = false;
      $("link-url").select();
      $("trip-error").textContent = "";
    } catch (e) {
      $("trip-error").textContent = `No link: ${e.message}`;
    } finally {
      button.disabled = false;
    }
  }

  async function load(id, fit = false) {
    try {
      const [trip, { checkins }] = await Promise.all([
        ctx.api.get(`/v1/trips/${enc(id)}`),
        ctx.api.get(`/v1/checkins?trip_id=${enc(id)}&limit=1000`),
      ]);
      if (current !== id) return;
      const byStop = new Map(checkins.map((c) => [c.stop_id, c]));
      $("trip-id").textContent = trip.id;
      const done = trip.stops.filter((s) => s.status !== "pending").length;
      $("trip-summary").textContent = `driver ${trip.driver_id} · ${done}/${trip.stops.length} stops · ${trip.status}`
        + (trip.completed_at ? ` at ${clock(trip.completed_at)}` : "");
      $("trip-stops").replaceChildren(...trip.stops.map((s) => stopItem(trip, s, byStop.get(s.id))));
      $("trip-body").hidden = false;
      $("trip-empty").hidden = true;
      $("trip-body").dataset.tripId = trip.id;
      // Redrawn now that it is the shown trip: its rings show at any zoom.
      ctx.live.drawTrip(trip);
      if (fit) ctx.fitTrip(trip);
    } catch (e) {
      if (current === id) $("trip-error").textContent = `Trip ${id}: ${e.message}`;
    }
  }

  /** Shows trip `id` (re-read every REFRESH_MS while shown); with `fit`, the map shows its
   * stops. */
  function open(id, fit = false) {
    const previous = current;
    current = id;
    if (previous !== id) {
      $("link-box").hidden = true;
      $("trip-error").textContent = "";
      // The trip shown before goes back to rings by zoom only.
      const before = ctx.live.trips.get(previous);
      if (before) ctx.live.drawTrip(before.trip);
    }
    clearInterval(timer);
    timer = setInterval(() => load(id), REFRESH_MS);
    return load(id, previous !== id && fit);
  }

  /** An event of the shown trip re-reads it. */
  function onEvent(e) {
    if (current && e.trip_id === current) load(current);
  }

  return { open, onEvent, get current() { return current; } };
}
