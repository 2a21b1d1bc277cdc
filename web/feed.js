// The events feed: the newest durable events (`GET /v1/events?order=desc`), then live ones from
// a service stream (`/v1/ws/stream?mode=none&since=<head>`: every event after the page read,
// exactly once, in order), filtered by type and driver (by the hub) and trip (here, events
// carry their trip id). Changing a filter reloads.
import { clock, el, enc } from "./api.js";

const SHOWN = 200;
const TYPES = ["stop.checked_in", "stop.departed", "stop.approaching", "stop.late", "trip.completed",
  "driver.online", "driver.offline", "driver.stopped", "driver.moving",
  "geofence.entered", "geofence.dwelled", "geofence.exited"];

/** A line of text for an event; `stopName(trip, stop)` gives a stop's name where known. */
export function describeEvent(e, stopName = () => null) {
  const stop = e.stop_id ? ` at ${stopName(e.trip_id, e.stop_id) || e.stop_id}` : "";
  switch (e.type) {
    case "stop.checked_in": return `checked in${stop} (${e.source || "auto"})`;
    case "stop.departed": return `left${stop}`;
    case "stop.approaching": return `approaching${stop}, ETA ${clock(e.eta)}`;
    case "stop.late": return e.late ? `late${stop}: ETA ${clock(e.eta)} after the window` : `back on time${stop}`;
    case "trip.completed": return "completed the trip";
    case "driver.stopped": return e.unplanned ? "stopped (unplanned)" : "stopped";
    case "driver.moving": return "moving again";
    case "geofence.entered": return `entered geofence ${e.geofence_id}`;
    case "geofence.dwelled": return `dwelled in geofence ${e.geofence_id}`;
    case "geofence.exited": return `left geofence ${e.geofence_id}`;
    default: return e.type.replace("driver.", "");
  }
}

export function createFeed(ctx) {
  const $ = (id) => document.getElementById(id);
  let socket = null;
  let generation = 0;
  let attempt = 0;
  const seen = new Set();

  for (const t of TYPES) $("event-type").append(new Option(t, t));

  function filters() {
    return { type: $("event-type").value, driver: $("event-driver").value.trim(), trip: $("event-trip").value.trim() };
  }

  function query(f) {
    const q = [];
    if (f.type) q.push(`types=${enc(f.type)}`);
    if (f.driver) q.push(`drivers=${enc(f.driver)}`);
    return q;
  }

  function item(e) {
    const li = el("li", null);
    li.tabIndex = 0;
    li.dataset.eventId = String(e.id);
    li.dataset.type = e.type;
    li.dataset.driverId = e.driver_id;
    if (e.trip_id) li.dataset.tripId = e.trip_id;
    const time = el("time", "meta", clock(e.ts));
    time.dateTime = e.ts;
    li.append(time, " ", el("span", "name", e.driver_id), " ", describeEvent(e, ctx.live.stopName));
    if (e.trip_id) li.append(el("div", "meta", `trip ${e.trip_id}`));
    const open = () => (e.trip_id ? ctx.openTrip(e.trip_id, e.stop_id) : ctx.follow(e.driver_id));
    li.addEventListener("click", open);
    li.addEventListener("keydown", (k) => { if (k.key === "Enter") open(); });
    return li;
  }

  function add(events, atTop, f) {
    const list = $("event-list");
    const items = [];
    for (const e of events) {
      if (seen.has(e.id) || (f.trip && e.trip_id !== f.trip)) continue;
      seen.add(e.id);
      items.push(item(e));
    }
    if (atTop) list.prepend(...items.reverse());
    else list.append(...items);
    while (list.children.length > SHOWN) list.lastElementChild.remove();
  }

  function close() {
    if (socket) {
      socket.onclose = null;
      socket.close(1000, "filters changed");
      socket = null;
    }
  }

  /** Reads the newest events, then follows the log from there. */
  async function reload() {
    const mine = ++generation;
    close();
    const f = filters();
    let page;
    try {
      page = await ctx.api.get(`/v1/events?${["order=desc", `limit=${SHOWN}`, ...query(f)].join("&")}`);
    } catch (e) {
      if (mine === generation) $("event-list").replaceChildren(el("li", "meta", `Events: ${e.message}`));
      return;
    }
    if (mine !== generation) return;
    seen.clear();
    $("event-list").replaceChildren();
    add(page.events, false, f);
    follow(mine, f, page.next_since);
  }

  function follow(mine, f, since) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const q = ["mode=none", `since=${since}`, ...query(f), `access_token=${enc(ctx.token())}`];
    const ws = new WebSocket(`${scheme}://${location.host}/v1/ws/stream?${q.join("&")}`);
    socket = ws;
    let last = since;
    ws.onopen = () => { attempt = 0; };
    ws.onmessage = (m) => {
      const message = JSON.parse(m.data);
      if (message.type !== "event") return;
      last = Math.max(last, message.event.id || 0);
      add([message.event], true, f);
      ctx.onEvent?.(message.event);
    };
    ws.onclose = () => {
      if (mine !== generation) return;
      // Resume after the last event received: nothing is missed or shown twice.
      const delay = Math.min(30_000, 500 * 2 ** attempt++) * Math.random() + 100;
      setTimeout(() => mine === generation && follow(mine, f, last), delay);
    };
  }

  for (const id of ["event-type", "event-driver", "event-trip"]) $(id).addEventListener("change", reload);
  return { reload, stop: () => { generation += 1; close(); } };
}
