"""The HTML report's page: inline CSS and JS, no external resource, so it opens offline.

Kept as a Python string (not a data file) so the report needs no package data to be installed.
Placeholders use :class:`string.Template` syntax (``$name``); the JS therefore avoids ``$``.
"""

from __future__ import annotations

from string import Template

PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg: #ffffff; --panel: #f8f9fb; }
  * { box-sizing: border-box; }
  body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto,
         "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
  h1 { font-size: 22px; margin: 0 0 4px; }
  h2 { font-size: 17px; margin: 28px 0 6px; }
  .sub { color: var(--muted); margin: 0 0 16px; }
  .warn { background: #fff4e5; border: 1px solid #f5b971; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
  .errors { background: #fdecea; border: 1px solid #f1a7a0; padding: 8px 12px; border-radius: 6px; margin: 12px 0; }
  .errors li { margin: 2px 0; word-break: break-all; }
  .table-wrap { overflow-x: auto; max-width: 100%; }
  table.summary { border-collapse: collapse; width: 100%; margin: 8px 0 4px; background: var(--panel);
                  font-size: 13px; }
  table.summary td.file { max-width: 260px; word-break: break-all; }
  .empty { color: var(--muted); font-style: italic; margin: 6px 0 12px; }
  table.summary th, table.summary td { border: 1px solid var(--line); padding: 5px 8px; text-align: left;
         vertical-align: middle; }
  table.summary th { background: #eef1f5; font-weight: 600; white-space: nowrap; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  .status-ok { color: #067647; font-weight: 600; }
  .status-partial { color: #b54708; font-weight: 600; }
  .status-error { color: #b42318; font-weight: 600; }
  .dist { display: flex; width: 180px; height: 12px; border-radius: 3px; overflow: hidden; background: #e4e7ec; }
  .dist span { display: block; height: 100%; }
  .legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 10px 0 4px; align-items: center; }
  .legend .item { display: inline-flex; align-items: center; gap: 5px; cursor: pointer; user-select: none; }
  .legend .item.off { opacity: 0.35; }
  .legend .sw { width: 14px; height: 10px; border-radius: 2px; display: inline-block; }
  .legend .band { width: 14px; height: 10px; display: inline-block; border: 1px solid var(--line); }
  .legend .sep { width: 1px; height: 14px; background: var(--line); margin: 0 4px; }
  .chart { position: relative; margin: 4px 0 10px; }
  .chart svg { display: block; width: 100%; height: auto; max-width: 1100px; background: #fff; }
  .chart svg .series { fill: none; stroke-width: 1.6; stroke-linejoin: round; }
  .chart svg .series.hidden { display: none; }
  .axis text { fill: var(--muted); font-size: 11px; }
  .axis line, .axis path { stroke: #98a2b3; stroke-width: 1; }
  .grid line { stroke: #eaecf0; stroke-width: 1; }
  .strip-label { fill: var(--muted); font-size: 10px; }
  .tip { position: absolute; pointer-events: none; background: rgba(29,35,48,0.92); color: #fff;
         font-size: 12px; padding: 6px 8px; border-radius: 5px; white-space: nowrap; display: none; z-index: 2; }
  .meta { color: var(--muted); font-size: 12px; }
  footer { margin-top: 32px; color: var(--muted); font-size: 12px; max-width: 1100px; }
</style>
</head>
<body>
<h1>$title</h1>
<p class="sub">$subtitle</p>
$warning
$errors
<div class="table-wrap"><table class="summary">
<thead><tr>
  <th>Participant</th><th>File</th><th>Status</th><th>Duration</th><th>Results</th>
  <th>Both</th><th>Audio only</th><th>Video only</th><th>No result</th>
  <th>Dominant</th><th>Emotion distribution</th><th>Anomaly rate</th><th>Faces found</th>
</tr></thead>
<tbody>
$rows
</tbody>
</table></div>
<div class="legend" id="legend">$legend</div>
$charts
<footer>$footer</footer>
<script type="application/json" id="replay-data">$data</script>
<script>
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("replay-data").textContent);
  function fmt(v) { return v === null || v === undefined ? "n/a" : (Math.round(v * 10000) / 10000).toFixed(4); }
  document.querySelectorAll("#legend .item[data-class]").forEach(function (item) {
    item.addEventListener("click", function () {
      var cls = item.getAttribute("data-class");
      var off = item.classList.toggle("off");
      document.querySelectorAll('.series[data-class="' + cls + '"]').forEach(function (el) {
        el.classList.toggle("hidden", off);
      });
    });
  });
  document.querySelectorAll(".chart").forEach(function (chart) {
    var d = data.charts[chart.getAttribute("data-index")];
    if (!d || !d.t.length) { return; }
    var svg = chart.querySelector("svg");
    var cursor = svg.querySelector(".cursor");
    var tip = chart.querySelector(".tip");
    var g = data.geometry;
    svg.addEventListener("mousemove", function (ev) {
      var box = svg.getBoundingClientRect();
      var x = (ev.clientX - box.left) * g.width / box.width;
      var t = data.t0 + (x - g.left) / g.plotWidth * (data.t1 - data.t0);
      var lo = 0, hi = d.t.length - 1;
      while (lo < hi) { var mid = (lo + hi) >> 1; if (d.t[mid] < t) { lo = mid + 1; } else { hi = mid; } }
      if (lo > 0 && Math.abs(d.t[lo - 1] - t) < Math.abs(d.t[lo] - t)) { lo -= 1; }
      var cx = g.left + (d.t[lo] - data.t0) / (data.t1 - data.t0) * g.plotWidth;
      cursor.setAttribute("x1", cx); cursor.setAttribute("x2", cx); cursor.style.display = "";
      var lines = ["t = " + d.t[lo].toFixed(2) + " s  " + d.emotion[lo] + " (" + fmt(d.confidence[lo]) + ")",
                   "profile " + d.modality[lo] + (d.anomaly[lo] ? "  ANOMALY" : "")];
      data.classes.forEach(function (c, k) { lines.push(c + ": " + fmt(d.p[k][lo])); });
      tip.textContent = "";
      lines.forEach(function (line) {
        var div = document.createElement("div");
        div.textContent = line;
        tip.appendChild(div);
      });
      tip.style.display = "block";
      var px = cx * box.width / g.width;
      tip.style.left = Math.min(px + 12, box.width - 200) + "px";
      tip.style.top = "8px";
    });
    svg.addEventListener("mouseleave", function () { tip.style.display = "none"; cursor.style.display = "none"; });
  });
})();
</script>
</body>
</html>
"""
)
