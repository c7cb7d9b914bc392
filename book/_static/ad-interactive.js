/* Interactive figures of "Alignment Dynamics" (lib/alignment_dynamics/interactive.py makes the data).
 *
 * Vanilla JavaScript drawing SVG; no third-party library and nothing fetched from the network. Every
 * <div data-ad-figure="map|scatter|matrix"> holds its data in a <script type="application/json"
 * class="ad-data">; this script draws it once (data-ad-ready="1" afterwards), with a hover label
 * (.ad-tip), legend toggles (maps) and a search box (scatters and matrices). Text from the data is only
 * ever set as textContent, never as markup.
 */
(function () {
  "use strict";
  if (window.adInteractive) return; // loaded twice: draw once
  var SVG = "http://www.w3.org/2000/svg";
  var CSS = [
    ".ad-interactive{position:relative;margin:0.5em 0 1.5em;font:12px/1.35 sans-serif}",
    ".ad-interactive svg{display:inline-block;vertical-align:top;overflow:visible}",
    ".ad-interactive .ad-bar{margin:0 0 4px;display:flex;flex-wrap:wrap;gap:6px;align-items:center}",
    ".ad-interactive button{font:inherit;border:1px solid #999;border-radius:3px;background:#fff;padding:1px 6px;cursor:pointer}",
    ".ad-interactive button[aria-pressed=false]{opacity:0.45;text-decoration:line-through}",
    ".ad-interactive .ad-swatch{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px}",
    ".ad-interactive input[type=search]{font:inherit;width:18em}",
    ".ad-tip{position:absolute;z-index:10;pointer-events:none;max-width:28em;background:#fff;border:1px solid #444;",
    "border-radius:3px;padding:4px 6px;box-shadow:0 1px 4px rgba(0,0,0,.3);display:none;white-space:pre-line}",
    ".ad-interactive .ad-mark{cursor:pointer}",
    ".ad-interactive .ad-hide{display:none}",
    ".ad-interactive.ad-searching .ad-mark{opacity:0.15}",
    ".ad-interactive.ad-searching .ad-mark.ad-hl{opacity:1;stroke:#000;stroke-width:1.5px}",
    ".ad-interactive .ad-axis{stroke:#333;fill:none}",
    ".ad-interactive .ad-bg{stroke:#333;fill:#ececec}",
    ".ad-interactive text{fill:#222}",
    ".ad-interactive .ad-note{color:#555;margin:2px 0}",
    "@media print{.ad-interactive{display:none}}", /* print shows the static figure beside it */
    /* the theme's dark mode (pydata-sphinx-theme sets data-theme on <html>) */
    "html[data-theme=dark] .ad-interactive text{fill:#ddd}",
    "html[data-theme=dark] .ad-interactive .ad-axis{stroke:#bbb}",
    "html[data-theme=dark] .ad-interactive .ad-bg{stroke:#bbb;fill:#3a3a3a}",
    "html[data-theme=dark] .ad-interactive .ad-note{color:#bbb}",
    "html[data-theme=dark] .ad-tip,html[data-theme=dark] .ad-interactive button{background:#222;color:#eee}",
  ].join("");

  function el(name, attrs, parent) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function html(name, attrs, parent, text) {
    var e = document.createElement(name);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "n/a";
    var a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : String(+v.toPrecision(4));
  }
  function extent(vals) {
    var lo = Infinity, hi = -Infinity;
    vals.forEach(function (v) { if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; } });
    if (!(lo <= hi)) return [0, 1];
    if (lo === hi) { lo -= 0.5; hi += 0.5; }
    var pad = 0.05 * (hi - lo);
    return [lo - pad, hi + pad];
  }
  function ticks(lo, hi, n) {
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var err = (hi - lo) / n / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + 1e-12 * step; t += step) out.push(+t.toPrecision(12));
    return out;
  }
  /* One panel with axes; returns {g, sx, sy}. */
  function axes(svg, x0, y0, w, h, xr, yr, labels) {
    var g = el("g", {transform: "translate(" + x0 + "," + y0 + ")"}, svg);
    var sx = function (v) { return (v - xr[0]) / (xr[1] - xr[0]) * w; };
    var sy = function (v) { return h - (v - yr[0]) / (yr[1] - yr[0]) * h; };
    el("rect", {x: 0, y: 0, width: w, height: h, "class": "ad-axis"}, g);
    if (labels.ticks !== false) {
      ticks(xr[0], xr[1], 4).forEach(function (t) {
        el("line", {x1: sx(t), x2: sx(t), y1: h, y2: h + 4, "class": "ad-axis"}, g);
        el("text", {x: sx(t), y: h + 15, "text-anchor": "middle"}, g).textContent = fmt(t);
      });
      ticks(yr[0], yr[1], 4).forEach(function (t) {
        el("line", {x1: -4, x2: 0, y1: sy(t), y2: sy(t), "class": "ad-axis"}, g);
        el("text", {x: -6, y: sy(t) + 4, "text-anchor": "end"}, g).textContent = fmt(t);
      });
    }
    el("text", {x: w / 2, y: h + 30, "text-anchor": "middle"}, g).textContent = labels.x || "";
    el("text", {x: -38, y: h / 2, "text-anchor": "middle", transform: "rotate(-90," + (-38) + "," + h / 2 + ")"}, g)
      .textContent = labels.y || "";
    el("text", {x: w / 2, y: -6, "text-anchor": "middle", "font-weight": "bold"}, g).textContent = labels.title || "";
    return {g: g, sx: sx, sy: sy};
  }
  /* The hover label: one per figure; marks carry their text in a closure map. */
  function tooltip(root, svg, label) {
    var tip = html("div", {"class": "ad-tip", role: "tooltip"}, root);
    function show(ev) {
      var t = ev.target.closest && ev.target.closest(".ad-mark");
      if (!t || !svg.contains(t)) return;
      tip.textContent = label(t);
      tip.style.display = "block";
      var box = root.getBoundingClientRect();
      var x = ev.clientX - box.left + 12, y = ev.clientY - box.top + 12;
      if (x + tip.offsetWidth > root.clientWidth) x = Math.max(0, x - tip.offsetWidth - 24);
      tip.style.left = x + "px";
      tip.style.top = y + "px";
    }
    svg.addEventListener("mouseover", show);
    svg.addEventListener("mousemove", show);
    svg.addEventListener("mouseout", function (ev) {
      if (!ev.relatedTarget || !ev.relatedTarget.closest || !ev.relatedTarget.closest(".ad-mark")) tip.style.display = "none";
    });
    return tip;
  }
  function toggle(bar, text, colour, onChange) {
    var b = html("button", {type: "button", "aria-pressed": "true", "class": "ad-toggle"}, bar);
    if (colour) html("span", {"class": "ad-swatch", style: "background:" + colour}, b);
    b.appendChild(document.createTextNode(text));
    b.addEventListener("click", function () {
      var on = b.getAttribute("aria-pressed") !== "true";
      b.setAttribute("aria-pressed", on ? "true" : "false");
      onChange(on);
    });
    return b;
  }
  function search(root, bar, names, marksOf) {
    var id = "ad-names-" + Math.random().toString(36).slice(2);
    var input = html("input", {type: "search", placeholder: "highlight a behaviour by name", list: id,
                               "aria-label": "highlight a behaviour by name", "class": "ad-search"}, bar);
    var list = html("datalist", {id: id}, bar);
    names.forEach(function (n) { html("option", {value: n}, list); });
    var count = html("span", {"class": "ad-count"}, bar);
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      root.querySelectorAll(".ad-hl").forEach(function (m) { m.classList.remove("ad-hl"); });
      if (!q) { root.classList.remove("ad-searching"); count.textContent = ""; return; }
      var exact = names.filter(function (n) { return n.toLowerCase() === q; });
      var hits = exact.length ? exact : names.filter(function (n) { return n.toLowerCase().indexOf(q) >= 0; });
      root.classList.add("ad-searching");
      hits.forEach(function (n) { marksOf(n).forEach(function (m) { m.classList.add("ad-hl"); }); });
      count.textContent = hits.length === 1 ? hits[0] : hits.length + " behaviours match";
    });
  }

  var W = 200, H = 170, ML = 52, MT = 24, GAP = 62, MB = 44;

  /* An SVG that scales down to the page's width (never up), keeping its aspect ratio. */
  function canvas(root, w, h, label) {
    return el("svg", {viewBox: "0 0 " + w + " " + h, width: w, height: h, role: "img", "aria-label": label,
                      style: "width:100%;max-width:" + w + "px;height:auto"}, root);
  }

  function drawMap(root, d) {
    var bar = html("div", {"class": "ad-bar"}, root);
    html("p", {"class": "ad-note"}, root, d.note);
    var svg = canvas(root, d.panels.length * (W + GAP) + ML, H + MT + MB, d.axis + " maps");
    var hidden = {cls: {}, beh: {}};
    function refresh() {
      root.querySelectorAll(".ad-mark").forEach(function (m) {
        var off = hidden.cls[m.getAttribute("data-c")] || hidden.beh[m.getAttribute("data-p")];
        m.classList.toggle("ad-hide", !!off);
      });
      root.querySelectorAll(".ad-panel").forEach(function (p) {
        p.classList.toggle("ad-hide", !!hidden.beh[p.getAttribute("data-p")]);
      });
    }
    d.classes.forEach(function (c, k) {
      toggle(bar, c, d.colours[k], function (on) { hidden.cls[k] = !on; refresh(); });
    });
    d.panels.forEach(function (p, k) {
      toggle(bar, p.behaviour, null, function (on) { hidden.beh[k] = !on; refresh(); });
      var ax = axes(svg, ML + k * (W + GAP), MT, W, H, extent(p.x), extent(p.y),
                    {x: d.axis + " 1", y: d.axis + " 2", title: p.title.split("\n")[0], ticks: false});
      ax.g.setAttribute("class", "ad-panel");
      ax.g.setAttribute("data-p", k);
      p.x.forEach(function (x, i) {
        el("circle", {cx: ax.sx(x), cy: ax.sy(p.y[i]), r: 3.2, fill: d.colours[p.cls[i]], "fill-opacity": 0.8,
                      "class": "ad-mark", "data-p": k, "data-i": i, "data-c": p.cls[i]}, ax.g);
      });
    });
    tooltip(root, svg, function (m) {
      var p = d.panels[+m.getAttribute("data-p")], i = +m.getAttribute("data-i");
      return p.text[i] + "\n" + d.classes[p.cls[i]] + " statement of \u201c" + p.behaviour + "\u201d";
    });
  }

  function drawScatter(root, d) {
    var bar = html("div", {"class": "ad-bar"}, root);
    var ncols = Math.min(3, d.panels.length), nrows = Math.ceil(d.panels.length / ncols);
    var svg = canvas(root, ncols * (W + GAP) + ML, nrows * (H + MT + MB), d.title || "one point per behaviour");
    html("p", {"class": "ad-note"}, bar.parentNode, "One point per behaviour; hover a point for its numbers.");
    root.insertBefore(root.lastChild, svg);
    var byName = {};
    d.names.forEach(function (n) { byName[n] = []; });
    d.panels.forEach(function (p, k) {
      var ax = axes(svg, ML + (k % ncols) * (W + GAP), MT + Math.floor(k / ncols) * (H + MT + MB), W, H,
                    extent(p.x), extent(p.y), {x: p.xlabel, y: p.ylabel, title: p.title});
      p.x.forEach(function (x, i) {
        var y = p.y[i];
        if (x === null || y === null) return;
        var c = el("circle", {cx: ax.sx(x), cy: ax.sy(y), r: 3.5, fill: (d.colours && d.colours[i]) || "#888",
                              "fill-opacity": 0.85, "class": "ad-mark", "data-p": k, "data-i": i}, ax.g);
        byName[d.names[i]].push(c);
      });
    });
    search(root, bar, d.names, function (n) { return byName[n]; });
    tooltip(root, svg, function (m) {
      var p = d.panels[+m.getAttribute("data-p")], i = +m.getAttribute("data-i");
      var lines = [d.names[i], (p.title ? p.title + ": " : "") + (p.xlabel || "x") + " = " + fmt(p.x[i]),
                   (p.ylabel || "y") + " = " + fmt(p.y[i])];
      for (var key in p.extra) lines.push(key + " = " + fmt(p.extra[key][i]));
      return lines.join("\n");
    });
  }

  function diverging(v, vmax) {
    var t = Math.max(-1, Math.min(1, v / vmax)); // red: the row has the higher level; blue: the column
    var end = t > 0 ? [178, 24, 43] : [33, 102, 172], a = Math.abs(t);
    return "rgb(" + end.map(function (e) { return Math.round(255 + (e - 255) * a); }).join(",") + ")";
  }

  function drawMatrix(root, d) {
    var bar = html("div", {"class": "ad-bar"}, root);
    var n = d.names.length, size = Math.max(4, Math.min(22, Math.floor(600 / n)));
    var cells = d.cells || [];
    if (d.values) {
      d.values.forEach(function (v, k) { if (v !== null) cells.push([Math.floor(k / n), k % n, v, null, null, null]); });
    }
    var vmax = 0;
    cells.forEach(function (c) { vmax = Math.max(vmax, Math.abs(c[2])); });
    vmax = vmax || 1;
    html("p", {"class": "ad-note"}, root, "Colour: " + d.label + " of row i over column j, red positive (i has the " +
         "higher priority level), blue negative, full colour at \u00b1" + fmt(vmax) + ". Hover a cell for the pair.");
    var svg = canvas(root, n * size + 80, n * size + 60, d.title || d.label + " of pairs of behaviours");
    var g = el("g", {transform: "translate(40,20)"}, svg);
    el("text", {x: n * size / 2, y: -6, "text-anchor": "middle", "font-weight": "bold"}, g).textContent = d.title || "";
    el("rect", {x: 0, y: 0, width: n * size, height: n * size, "class": "ad-bg"}, g);
    var byName = {};
    d.names.forEach(function (nm) { byName[nm] = []; });
    cells.forEach(function (c, k) {
      var r = el("rect", {x: c[1] * size, y: c[0] * size, width: size, height: size, fill: diverging(c[2], vmax),
                          "class": "ad-mark", "data-k": k}, g);
      byName[d.names[c[0]]].push(r);
      byName[d.names[c[1]]].push(r);
    });
    (d.rings || []).forEach(function (m) {
      el("rect", {x: m[1] * size - 2, y: m[0] * size - 2, width: size + 4, height: size + 4, fill: "none",
                  stroke: "#000", "stroke-width": 1.5, "pointer-events": "none"}, g);
      el("text", {x: m[1] * size + size + 3, y: m[0] * size + size, "pointer-events": "none"}, g).textContent = m[2];
    });
    el("text", {x: n * size / 2, y: n * size + 16, "text-anchor": "middle"}, g).textContent =
      "column behaviour j (sorted)";
    el("text", {x: -10, y: n * size / 2, "text-anchor": "middle", transform: "rotate(-90,-10," + n * size / 2 + ")"}, g)
      .textContent = "row behaviour i";
    search(root, bar, d.names, function (nm) { return byName[nm]; });
    tooltip(root, svg, function (m) {
      var c = cells[+m.getAttribute("data-k")], a = d.names[c[0]], b = d.names[c[1]];
      var lines = ["i = " + a, "j = " + b, d.label + " of i over j = " + fmt(c[2])];
      lines.push("predicted to be learned first: " + (c[2] > 0 ? a : c[2] < 0 ? b : "neither (zero gap)"));
      if (d.first === "measured") {
        lines.push("learned first (" + d.gain + " " + fmt(c[4]) + " vs " + fmt(c[5]) + "): " +
                   (c[3] === 0 ? a : c[3] === 1 ? b : "neither (a tie)"));
      }
      return lines.join("\n");
    });
  }

  var DRAW = {map: drawMap, scatter: drawScatter, matrix: drawMatrix};

  function drawAll() {
    document.querySelectorAll("div[data-ad-figure]").forEach(function (root) {
      if (root.getAttribute("data-ad-ready")) return;
      var kind = root.getAttribute("data-ad-figure"), data = root.querySelector("script.ad-data");
      try {
        if (!DRAW[kind] || !data) throw new Error("unknown figure kind " + kind + " or no data");
        var d = JSON.parse(data.textContent);
        var fb = root.querySelector(".ad-fallback");
        if (fb) fb.remove();
        DRAW[kind](root, d);
        root.setAttribute("data-ad-ready", "1");
      } catch (e) {
        root.setAttribute("data-ad-ready", "error");
        console.error("ad-interactive: " + e);
      }
    });
  }

  window.adInteractive = {draw: drawAll};
  var style = document.createElement("style");
  style.textContent = CSS;
  (document.head || document.documentElement).appendChild(style);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();
