// The customer's tracking page (served at /t/{token}): follows /t/{token}/live (Server-Sent
// Events) and shows the stop, its ETA and, only while this stop is the driver's next one, the
// driver on a map. Everything from the hub is written as text, never as HTML.
"use strict";

(() => {
  const token = decodeURIComponent(location.pathname.split("/")[2] || "");
  const base = `/t/${encodeURIComponent(token)}`;
  const $ = (id) => document.getElementById(id);
  const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  const day = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });
  // A time today as "14:32", another day with its date.
  const when = (iso) => {
    const t = new Date(iso);
    return t.toDateString() === new Date().toDateString() ? time.format(t) : day.format(t);
  };

  const map = L.map("map", { zoomControl: true, attributionControl: true });
  map.setView([0, 0], 2);
  fetch("/map/config.json").then((r) => r.json()).then((config) => {
    if (config.tile_url) {
      L.tileLayer(config.tile_url, { attribution: config.tile_attribution, maxZoom: 19 }).addTo(map);
    }
  }).catch(() => {});

  let stopMarker = null;
  let driverMarker = null;
  let fitted = "";

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.textContent = text;
  }

  function minutesUntil(iso) {
    return Math.max(0, Math.round((new Date(iso) - Date.now()) / 60000));
  }

  function render(view) {
    document.body.dataset.state = view.state;
    $("stop-name").textContent = view.stop.name || "Your delivery";
    const headline = $("headline");
    headline.dataset.stopsBefore = String(view.stops_before);
    if (view.state === "delivered") {
      headline.textContent = `Delivered at ${when(view.delivered_at)}`;
    } else if (view.state === "next") {
      headline.textContent = "Your driver is on the way to you";
    } else if (view.stops_before > 0) {
      headline.textContent = view.stops_before === 1 ? "1 stop before yours" : `${view.stops_before} stops before yours`;
    } else {
      headline.textContent = "Your delivery is scheduled";
    }
    const eta = view.state !== "delivered" ? view.stop.eta : null;
    $("eta-line").hidden = !eta;
    if (eta) {
      $("eta").textContent = when(eta);
      $("eta").dataset.eta = eta;
      const mins = minutesUntil(eta);
      $("eta-in").textContent = mins <= 1 ? "(any minute now)" : `(in ${mins} min)`;
    }
    $("late").hidden = !view.stop.late;
    const w = view.stop;
    $("window-line").hidden = !(w.window_start || w.window_end) || view.state === "delivered";
    $("window").textContent = [w.window_start && when(w.window_start), w.window_end && when(w.window_end)].filter(Boolean).join(" – ");
    $("expires").textContent = `Link valid until ${when(view.expires_at)}`;

    const stopAt = [view.stop.lat, view.stop.lon];
    if (!stopMarker) {
      stopMarker = L.marker(stopAt, { icon: L.divIcon({ className: "", html: '<div class="stop-marker"></div>', iconSize: [22, 22], iconAnchor: [11, 11] }), title: "Delivery address", alt: "Delivery address" }).addTo(map);
    }
    if (view.driver) {
      const d = [view.driver.lat, view.driver.lon];
      if (!driverMarker) {
        driverMarker = L.marker(d, { icon: L.divIcon({ className: "", html: '<div class="driver-marker" aria-label="Your driver">➤</div>', iconSize: [26, 26], iconAnchor: [13, 13] }), title: "Your driver", alt: "Your driver" }).addTo(map);
      } else {
        driverMarker.setLatLng(d);
      }
      const arrow = driverMarker.getElement()?.querySelector(".driver-marker");
      if (arrow) {
        arrow.style.transform = `rotate(${(view.driver.heading_deg ?? 90) - 90}deg)`;
        arrow.dataset.lat = String(view.driver.lat);
        arrow.dataset.lon = String(view.driver.lon);
      }
    } else if (driverMarker) {
      driverMarker.remove();
      driverMarker = null;
    }
    const key = view.driver ? "both" : "stop";
    if (fitted !== key) {
      fitted = key;
      if (view.driver) {
        map.fitBounds(L.latLngBounds([stopAt, [view.driver.lat, view.driver.lon]]).pad(0.3), { maxZoom: 16 });
      } else {
        map.setView(stopAt, 15);
      }
    }
  }

  function ended(detail) {
    document.body.dataset.state = "ended";
    $("headline").textContent = detail || "This tracking link is no longer valid.";
    $("eta-line").hidden = true;
    $("late").hidden = true;
    $("window-line").hidden = true;
    setConnection("ended", "");
  }

  let source = null;
  function follow() {
    source = new EventSource(`${base}/live`);
    source.addEventListener("open", () => setConnection("live", "live"));
    source.addEventListener("status", (e) => {
      setConnection("live", "live");
      render(JSON.parse(e.data));
    });
    source.addEventListener("gone", (e) => {
      source.close();
      ended(JSON.parse(e.data).detail);
    });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (404/410/429): ask once why, then stop or retry later.
        fetch(`${base}/status`).then(async (r) => {
          if (r.status === 404 || r.status === 410) {
            ended((await r.json()).detail);
          } else {
            setConnection("reconnecting", "reconnecting…");
            setTimeout(follow, 5000 + Math.random() * 5000);
          }
        }).catch(() => {
          setConnection("reconnecting", "reconnecting…");
          setTimeout(follow, 5000 + Math.random() * 5000);
        });
      } else {
        setConnection("reconnecting", "reconnecting…");
      }
    });
  }
  follow();
  // Keep "in N min" current between updates.
  setInterval(() => {
    const eta = $("eta").dataset.eta;
    if (eta && !$("eta-line").hidden) {
      const mins = minutesUntil(eta);
      $("eta-in").textContent = mins <= 1 ? "(any minute now)" : `(in ${mins} min)`;
    }
  }, 30000);
})();
