// The drivers panel: every driver of the fleet (`GET /v1/fleet/drivers`, re-read every
// REFRESH_MS and after presence and stop events) with status, trip progress, next stop and
// ETA, battery; search by driver or trip id, filter by status; a click follows the driver.
import { ago, clock, el } from "./api.js";

const REFRESH_MS = 5_000;
/** Rows drawn at once: a longer list is a search away (5,000 rows of DOM cost seconds). */
const MAX_ROWS = 200;

export function createDriversPanel(ctx) {
  const $ = (id) => document.getElementById(id);
  let rows = [];
  let timer = null;
  let loading = null;

  function matches(r, query, status) {
    if (status && r.status !== status) return false;
    if (!query) return true;
    return r.driver_id.toLowerCase().includes(query) || (r.trip?.id || "").toLowerCase().includes(query);
  }

  function row(r) {
    const li = el("li", ctx.selected === r.driver_id ? "selected" : null);
    li.tabIndex = 0;
    li.dataset.driverId = r.driver_id;
    li.dataset.status = r.status;
    const since = r.since ? ` ${ago(r.since)}` : "";
    const head = el("div", null, el("span", "name", r.driver_id), el("span", `badge ${r.status}`, `${r.status}${since}`));
    const battery = r.position?.battery;
    if (battery) head.append(el("span", "meta", ` · battery ${Math.round(battery.level * 100)} %${battery.charging ? " (charging)" : ""}`));
    li.append(head);
    if (r.trip) {
      const t = r.trip;
      const progress = el("span", "progress", `${t.done}/${t.total} stops`);
      const parts = [progress, ` · trip ${t.id}`];
      if (t.next_stop) {
        parts.push(el("br"), `next: ${t.next_stop.name || t.next_stop.id}`);
        if (t.next_stop.eta) parts.push(" · ETA ", el("span", "eta", clock(t.next_stop.eta)));
        if (t.next_stop.late) parts.push(el("span", "badge late", "late"));
      }
      if (r.more_trips) parts.push(` (+${r.more_trips} more)`);
      li.append(el("div", "meta", ...parts));
    } else {
      li.append(el("div", "meta", r.position ? `last fix ${clock(r.position.ts)}` : "no fix stored"));
    }
    const open = () => ctx.follow(r.driver_id);
    li.addEventListener("click", open);
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    return li;
  }

  function render() {
    const query = $("driver-search").value.trim().toLowerCase();
    const status = $("driver-status").value;
    const shown = rows.filter((r) => matches(r, query, status));
    $("driver-list").replaceChildren(...shown.slice(0, MAX_ROWS).map(row));
    $("drivers-shown").textContent = shown.length > MAX_ROWS
      ? `${MAX_ROWS} of ${shown.length} shown: search to narrow`
      : `${shown.length} of ${rows.length} drivers`;
    $("driver-count").textContent = String(rows.length);
    $("online-count").textContent = String(rows.filter((r) => r.status !== "offline").length);
  }

  async function load() {
    if (loading) return loading;
    loading = (async () => {
      try {
        rows = (await ctx.api.get("/v1/fleet/drivers")).drivers;
        for (const r of rows) ctx.live.setStatus(r.driver_id, r.status);
        ctx.onTripsListed?.(rows.filter((r) => r.trip).map((r) => r.trip.id), rows.reduce((n, r) => n + (r.trip ? 1 + r.more_trips : 0), 0));
        render();
      } catch (e) {
        ctx.fail(e);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function start() {
    clearInterval(timer);
    timer = setInterval(load, REFRESH_MS);
    return load();
  }

  /** The row of a driver, as last read. */
  const get = (id) => rows.find((r) => r.driver_id === id);

  $("driver-search").addEventListener("input", render);
  $("driver-status").addEventListener("change", render);
  return { start, load, render, get };
}
