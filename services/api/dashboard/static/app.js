// citysense dashboard: the city's air, heat and noise by Community Statistical Area, from the API's own
// endpoints. Plain JavaScript over Leaflet (the map) and uPlot (the charts); no build step.
"use strict";

(function () {

  // Each scale says its category in words as well as colour; "no data" is its own category, never "good".
  const SCALES = {
    aqi: {
      title: "Air Quality Index (US EPA)",
      metric: "pm25", metricLabel: "PM2.5 (µg/m³), hourly mean",
      categories: [
        ["Good", "#00E400"], ["Moderate", "#FFFF00"], ["Unhealthy for Sensitive Groups", "#FF7E00"],
        ["Unhealthy", "#FF0000"], ["Very Unhealthy", "#8F3F97"], ["Hazardous", "#7E0023"],
      ],
      category: (p) => p.aqi_category,
      value: (p) => (p.aqi == null ? null : `AQI ${p.aqi}` + (p.main_pollutant ? ` (${pollutantName(p.main_pollutant)})` : "")),
    },
    heat: {
      title: "Heat index (US NWS)",
      metric: "temperature", metricLabel: "Temperature (°C), hourly mean",
      categories: [
        ["Below 80 °F", "#C6E9C0"], ["Caution", "#FFFF66"], ["Extreme Caution", "#FFCC00"],
        ["Danger", "#FF8C00"], ["Extreme Danger", "#D7301F"],
      ],
      category: (p) => (p.heat_index_f == null ? null : p.heat_index_category || "Below 80 °F"),
      value: (p) => (p.heat_index_f == null ? null : `${Math.round(p.heat_index_f)} °F`),
    },
    noise: {
      title: "Noise, last 24 h (Leq, against the WHO 2018 guideline of 53 dB)",
      metric: "noise_laeq", metricLabel: "Noise LAeq (dB), hourly energy mean",
      categories: [
        ["Within the WHO guideline (≤ 53 dB)", "#1A9850"], ["Above it (53–60 dB)", "#FDAE61"],
        ["Far above it (> 60 dB)", "#D73027"],
      ],
      category: (p) => {
        const v = p.noise_leq_24h;
        if (v == null) return null;
        return v <= 53 ? "Within the WHO guideline (≤ 53 dB)" : v <= 60 ? "Above it (53–60 dB)" : "Far above it (> 60 dB)";
      },
      value: (p) => (p.noise_leq_24h == null ? null : `${p.noise_leq_24h.toFixed(1)} dB`),
    },
  };
  const NO_DATA = ["No data", "#D1D5DB"];
  const POLLUTANTS = { pm25: "PM2.5", pm10: "PM10", o3: "ozone", no2: "NO₂", so2: "SO₂", co: "CO" };
  const pollutantName = (p) => POLLUTANTS[p] || p;

  const state = { indicator: "aqi", summary: null, selected: null, layer: null, devices: null, loadedAt: null,
                  config: { tiles: null, attribution: "", timezone: "America/New_York", refresh_s: 60 }, shapes: {} };
  window.citysense = state;  // for a look from the browser's console (and the tests)
  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, ...children) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) e.append(c);
    return e;
  };

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json, application/geo+json" } });
    if (!r.ok) throw new Error(`${url}: ${r.status}`);
    return r.json();
  }

  function colourOf(scale, props) {
    const category = scale.category(props);
    if (category == null) return { category: NO_DATA[0], colour: NO_DATA[1], none: true };
    const found = scale.categories.find(([name]) => name === category);
    return { category, colour: found ? found[1] : NO_DATA[1], none: false };
  }

  function time(t, withDate) {
    const opts = { hour: "2-digit", minute: "2-digit", timeZone: state.config.timezone };
    if (withDate) Object.assign(opts, { month: "short", day: "numeric" });
    return new Intl.DateTimeFormat("en-US", opts).format(new Date(t));
  }

  // -- the map ----------------------------------------------------------------------------------------
  const map = L.map("map", { zoomSnap: 0.25, keyboard: true, attributionControl: true });
  map.attributionControl.setPrefix("");
  const deviceLayer = L.layerGroup();
  map.on("zoomend", () => {
    if (map.getZoom() >= 13.5) deviceLayer.addTo(map); else deviceLayer.remove();
  });

  function style(feature) {
    const c = colourOf(SCALES[state.indicator], feature.properties);
    const selected = state.selected === feature.properties.csa;
    return { color: selected ? "#111" : "#444", weight: selected ? 3 : 1, dashArray: c.none ? "4 3" : null,
             fillColor: c.colour, fillOpacity: c.none ? 0.35 : 0.7 };
  }

  function describe(p) {
    const scale = SCALES[state.indicator];
    const c = colourOf(scale, p);
    const value = scale.value(p);
    return `${p.csa}: ${c.none ? "no data" : `${value}, ${c.category}`}`;
  }

  function drawMap(geojson) {
    if (state.layer && geojson.features.every((f) => state.shapes[f.properties.csa])) {
      // A refresh: new values on the same shapes (focus, tooltips and the selection stay where they are)
      for (const f of geojson.features) state.shapes[f.properties.csa].feature.properties = f.properties;
      restyle();
      return;
    }
    const first = !state.layer;
    if (state.layer) state.layer.remove();
    state.shapes = {};
    state.layer = L.geoJSON(geojson, {
      style,
      onEachFeature: (feature, layer) => {
        layer.bindTooltip(() => describe(feature.properties), { sticky: true });
        layer.on("click", () => select(feature.properties.csa, false));
        state.shapes[feature.properties.csa] = layer;
      },
    });
    // The view first: Leaflet renders paths only on a map that has one
    if (first) map.fitBounds(state.layer.getBounds(), { padding: [8, 8] });
    state.layer.addTo(map);
    for (const [name, layer] of Object.entries(state.shapes)) {
      const path = layer.getElement && layer.getElement();
      if (path) {  // Leaflet makes each area a tab stop (its tooltip shows on focus); Enter or Space chooses it
        path.setAttribute("data-csa", name);
        path.setAttribute("role", "button");
        path.setAttribute("aria-label", describe(layer.feature.properties));
        path.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select(name, false); }
        });
      }
    }
    deviceLayer.bringToFront && deviceLayer.eachLayer((l) => l.bringToFront());
    window.citysenseRendered = window.citysenseRendered || performance.now();
  }

  function restyle() {
    for (const [name, layer] of Object.entries(state.shapes)) {
      layer.setStyle(style(layer.feature));
      const path = layer.getElement();
      if (path) path.setAttribute("aria-label", describe(layer.feature.properties));
    }
    drawLegend();
  }

  function drawLegend() {
    const scale = SCALES[state.indicator];
    const counts = {};
    for (const f of state.summary ? state.summary.features : []) {
      const c = colourOf(scale, f.properties).category;
      counts[c] = (counts[c] || 0) + 1;
    }
    const legend = $("#legend");
    legend.replaceChildren(el("strong", { text: scale.title + ":" }));
    for (const [name, colour] of [...scale.categories, NO_DATA]) {
      const swatch = el("span", { class: "swatch" + (name === NO_DATA[0] ? " none" : ""), "aria-hidden": "true" });
      if (name !== NO_DATA[0]) swatch.style.background = colour;
      legend.append(el("span", { class: "item", "data-category": name }, swatch,
                       `${name} (${counts[name] || 0} areas)`));
    }
  }

  function drawDevices(devices) {
    deviceLayer.clearLayers();
    for (const d of devices) {
      const reporting = d.status === "online";
      L.circleMarker([d.latitude, d.longitude], {
        radius: 5, weight: 2, color: "#1f2937", fillColor: reporting ? "#2563eb" : "#ffffff", fillOpacity: 1,
        dashArray: reporting ? null : "2 2",
      }).bindTooltip(`${d.device_id} · ${d.kind.replace("_", " ")} · ${d.status}` +
                     (d.last_seen ? ` · last report ${time(d.last_seen, true)}` : " · never reported"))
        .addTo(deviceLayer);
    }
  }

  // -- the area panel ---------------------------------------------------------------------------------
  function card(title, value, words, colour, note) {
    const c = el("div", { class: "card" }, el("h3", { text: title }));
    c.append(el("div", { class: "value", text: value == null ? "No data" : value }));
    if (words) {
      const w = el("div", { class: "words" });
      if (colour) { const b = el("span", { class: "badge", "aria-hidden": "true" }); b.style.background = colour; w.append(b); }
      w.append(words);
      c.append(w);
    }
    if (note) c.append(el("div", { class: "muted", text: note }));
    return c;
  }

  async function chart(container, title, csa, metric, label, hours) {
    const box = el("div", { class: "chart", "data-hours": String(hours) }, el("h3", { text: title }));
    container.append(box);
    const end = new Date(Math.floor(Date.now() / 3600e3) * 3600e3 + 3600e3);
    const start = new Date(end.getTime() - hours * 3600e3);
    const params = new URLSearchParams({ metric, bucket: "1h", group_by: "csa", csa, start: start.toISOString(),
                                         end: end.toISOString(), limit: "1000" });
    let items = [];
    try {
      items = (await getJSON(`/v1/aggregates?${params}`)).items;
    } catch (e) {
      box.append(el("p", { class: "empty", text: "The chart's data could not be loaded; it will be tried again." }));
      return;
    }
    box.setAttribute("data-points", String(items.filter((i) => i.mean != null).length));
    if (!items.length) { box.append(el("p", { class: "empty", text: `No ${label.split(" (")[0]} readings in this period.` })); return; }
    const xs = items.map((i) => Date.parse(i.bucket) / 1000);
    const ys = items.map((i) => (i.mean == null ? null : Math.round(i.mean * 10) / 10));
    const values = ys.filter((v) => v != null);
    box.append(el("p", { class: "muted", text: `${label}: lowest ${Math.min(...values)}, highest ${Math.max(...values)}, latest ${values[values.length - 1]}.` }));
    const width = Math.max(260, box.clientWidth || 320);
    const plot = new uPlot({
      width, height: 160, legend: { show: false }, cursor: { show: true },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), state.config.timezone),  // the city's clock, not the viewer's
      scales: { x: { time: true } },
      series: [{}, { label, stroke: "#0b57d0", width: 2, fill: "rgba(11,87,208,.08)", spanGaps: false }],
      axes: [{ stroke: "#57606a" }, { stroke: "#57606a", size: 45 }],
    }, [xs, ys], box);
    plot.root.setAttribute("aria-hidden", "true");
  }

  async function select(csa, fromList) {
    state.selected = csa || null;
    $("#csa-select").value = csa || "";
    if (state.layer) restyle();
    await drawFreshness();
    const panel = $("#panel");
    if (!csa) {
      panel.replaceChildren(el("h2", { id: "panel-title", text: "Choose an area" }));
      return;
    }
    if (!fromList && state.shapes[csa]) map.fitBounds(state.shapes[csa].getBounds(), { maxZoom: 14, padding: [20, 20] });
    const q = encodeURIComponent(csa);
    panel.replaceChildren(el("h2", { id: "panel-title", text: csa }), el("p", { class: "muted", text: "Loading…" }));
    let aqi, heat, noise;
    try {
      [aqi, heat, noise] = await Promise.all([getJSON(`/v1/qol/aqi?csa=${q}`), getJSON(`/v1/qol/heat-index?csa=${q}`),
                                              getJSON(`/v1/qol/noise?csa=${q}`)]);
    } catch (e) {
      panel.replaceChildren(el("h2", { id: "panel-title", text: csa }),
                            el("p", { class: "muted", text: "This area's data could not be loaded; it will be tried again at the next refresh." }));
      return;
    }
    if (state.selected !== csa) return;  // another area was chosen meanwhile
    const cards = el("div", { class: "cards" });
    const aqiWords = aqi.aqi == null ? null : `${aqi.category}` + (aqi.main_pollutant ? `, mainly ${pollutantName(aqi.main_pollutant)}` : "");
    cards.append(card("Air quality (AQI)", aqi.aqi, aqiWords, aqi.colour,
                      aqi.aqi == null ? aqi.note || "Not enough recent data." :
                      "PM2.5 and PM10 by EPA's NowCast (the last 12 hours, weighted to the most recent)."));
    const hiF = heat.heat_index_f;
    cards.append(card("Heat index", hiF == null ? null : `${Math.round(hiF)} °F`,
                      hiF == null ? null : heat.category || "Below 80 °F: no heat caution",
                      hiF == null ? null : (SCALES.heat.categories.find(([n]) => n === (heat.category || "Below 80 °F")) || [])[1],
                      hiF == null ? heat.note || "No recent temperature and humidity." :
                      `${heat.heat_index_c.toFixed(1)} °C; in the shade (full sun can add up to 15 °F).`));
    const fmt = (v) => (v == null ? "–" : `${v.toFixed(1)} dB`);
    cards.append(card("Noise today", noise.lden == null ? (noise.leq_24h == null ? null : `Leq ${fmt(noise.leq_24h)}`) : `Lden ${fmt(noise.lden)}`,
                      noise.hours_with_data ? `Day ${fmt(noise.lday)} · evening ${fmt(noise.levening)} · night ${fmt(noise.lnight)}` : null,
                      null,
                      noise.hours_with_data ? `${noise.hours_exceeding_who} of ${noise.hours_with_data} hours above the WHO guideline (53 dB Lden, 45 dB Lnight).`
                                            : noise.note || "No noise readings today."));
    const metric = SCALES[state.indicator].metric;
    const label = SCALES[state.indicator].metricLabel;
    const week = new Date(Date.now() - 7 * 86400e3).toISOString();
    const links = el("p", {}, el("a", { href: `/v1/datasets/readings.csv?csa=${q}&start=${encodeURIComponent(week)}`,
                                       text: `This area's readings of the last 7 days (CSV)` }), " · ",
                     el("a", { href: `/v1/datasets/air-quality-hourly.csv?csa=${q}&start=${encodeURIComponent(week)}`,
                               text: "hourly air quality (CSV)" }));
    panel.replaceChildren(el("h2", { id: "panel-title", text: csa }), cards, links);
    await chart(panel, "Last 24 hours", csa, metric, label, 24);
    await chart(panel, "Last 7 days", csa, metric, label, 24 * 7);
  }

  // -- freshness --------------------------------------------------------------------------------------
  async function drawFreshness() {
    let rows;
    try {
      const params = state.selected ? `?csa=${encodeURIComponent(state.selected)}` : "";
      rows = (await getJSON(`/v1/status/freshness${params}`)).items;
    } catch (e) {
      return;
    }
    const body = $("#freshness tbody");
    const shown = state.selected ? rows : rows.filter((r) => r.silent.length);
    $("#freshness-scope").textContent = state.selected
      ? `${state.selected}: every kind of sensor.`
      : `Every area: ${rows.reduce((n, r) => n + r.reporting, 0)} of ${rows.reduce((n, r) => n + r.devices, 0)} sensors reporting; the areas with silent sensors below.`;
    body.replaceChildren(...shown.map((r) => el("tr", {},
      el("td", { text: r.csa }), el("td", { text: r.kind.replace("_", " ") }),
      el("td", { text: `${r.reporting} of ${r.devices} (${Math.round(r.share_reporting * 100)} %)` }),
      el("td", { text: r.newest_reading ? time(r.newest_reading, true) : "never" }),
      el("td", { class: r.silent.length ? "silent" : "", "data-silent": r.silent.map((s) => s.device_id).join(" "),
                 text: r.silent.length ? r.silent.map((s) => s.device_id).join(", ") : "none" }))));
    if (!shown.length) body.append(el("tr", {}, el("td", { colspan: "5", text: "Every sensor is reporting." })));
  }

  // -- downloads --------------------------------------------------------------------------------------
  async function drawDownloads() {
    const list = $("#download-list");
    try {
      const catalogue = await getJSON("/data.json");
      list.replaceChildren(...catalogue.dataset.map((ds) => el("li", {}, `${ds.title}: `,
        ...ds.distribution.filter((d) => d.downloadURL).flatMap((d, i) => [i ? " · " : "",
          el("a", { href: new URL(d.downloadURL).pathname, text: d.format })]))));
    } catch (e) {
      list.replaceChildren(el("li", { text: "The catalogue could not be loaded." }));
    }
  }

  // -- refresh ----------------------------------------------------------------------------------------
  async function refresh() {
    const status = $("#status");
    try {
      const [summary, devices] = await Promise.all([getJSON("/v1/qol/summary?format=geojson"), allDevices()]);
      state.summary = summary;
      drawMap(summary);
      drawLegend();
      drawDevices(devices);
      const list = $("#csa-select");
      if (list.options.length === 1) {
        for (const f of [...summary.features].sort((a, b) => a.properties.csa.localeCompare(b.properties.csa))) {
          list.append(el("option", { value: f.properties.csa, text: f.properties.csa }));
        }
      }
      // The API computes the summary in the background: "as of" is when it did, not when the page fetched it.
      state.loadedAt = summary.computed_at ? Date.parse(summary.computed_at) : Date.now();
      status.classList.remove("error");
      tick();
      if (state.selected) await select_(state.selected); else await drawFreshness();
    } catch (e) {
      status.classList.add("error");
      status.textContent = "The latest data could not be loaded; showing what was loaded before. Trying again in a minute.";
    }
  }
  const select_ = (csa) => select(csa, true);

  async function allDevices() {
    const out = [];
    let cursor = null;
    do {
      const page = await getJSON(`/v1/devices?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      out.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor && out.length < 20000);
    return out;
  }

  function tick() {
    if (!state.loadedAt) return;
    const s = Math.round((Date.now() - state.loadedAt) / 1000);
    $("#status").textContent = `Data as of ${time(state.loadedAt)} (${s < 5 ? "just now" : `${s} s ago`}); ` +
      `refreshed every ${state.config.refresh_s === 60 ? "minute" : `${state.config.refresh_s} s`}. ` +
      "Air quality is for the last complete hour.";
  }

  // -- start ------------------------------------------------------------------------------------------
  for (const input of document.querySelectorAll('input[name="indicator"]')) {
    input.addEventListener("change", () => {
      state.indicator = input.value;
      restyle();
      if (state.selected) select_(state.selected);
    });
  }
  $("#csa-select").addEventListener("change", (e) => {
    select(e.target.value, true);
  });

  (async () => {
    try {
      state.config = { ...state.config, ...(await getJSON("/dashboard/config.json")) };
    } catch (e) { /* defaults */ }
    if (state.config.tiles) {
      L.tileLayer(state.config.tiles, { attribution: state.config.attribution, maxZoom: 18 }).addTo(map);
    }
    await Promise.all([refresh(), drawDownloads()]);
    setInterval(refresh, (state.config.refresh_s || 60) * 1000);
    setInterval(tick, 5000);
  })();
})();
