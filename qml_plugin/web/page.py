"""The labelling page: one HTML document with its script, built in memory (no files, no CDN).

``{{BOKEH}}`` is replaced by bokeh's INLINE JavaScript and ``{{TOKEN}}`` by the session token (as a
JSON string), so the page needs nothing but the server that made it.
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qml label</title>
{{BOKEH}}
<style>
 body { font-family: system-ui, sans-serif; margin: 1em 2em; color: #222; }
 #info { font-size: 15px; margin: .4em 0; } #info b { font-family: monospace; }
 #keys { color: #555; margin: .3em 0 1em; } kbd { border: 1px solid #aaa; border-radius: 3px; padding: 0 4px; }
 #layout { display: flex; gap: 1.5em; align-items: flex-start; }
 #near { display: flex; flex-direction: column; gap: .6em; } .nb { font-size: 12px; }
 #status { margin-top: .6em; color: #06c; } table { border-collapse: collapse; font-size: 13px; }
 td { padding: 1px 8px; border-bottom: 1px solid #eee; }
</style></head>
<body>
<h2>Label QML patterns</h2>
<div id="info">loading...</div>
<div id="keys"><kbd>W</kbd> win &nbsp; <kbd>L</kbd> loss &nbsp; <kbd>I</kbd> ignore &nbsp; <kbd>S</kbd> skip</div>
<div id="layout"><div><div id="chart"></div><div id="contrib"></div></div>
<div><h4>nearest labeled</h4><div id="near"></div></div></div>
<div id="status"></div>
<script>
const TOKEN = {{TOKEN}};
let current = null, skipped = [], busy = false;
function fmt(v, d) { return (v === null || v === undefined) ? "n/a" : (typeof v === "number" ? v.toFixed(d) : v); }
async function api(path, opts) {
  const sep = path.includes("?") ? "&" : "?";
  const r = await fetch(path + sep + "token=" + encodeURIComponent(TOKEN), opts);
  return r.json();
}
async function show() {
  busy = true;
  document.body.dataset.chartDrawn = "0";
  const data = await api("/api/next?skip=" + encodeURIComponent(skipped.join(",")));
  const chart = document.getElementById("chart"), near = document.getElementById("near");
  chart.innerHTML = ""; near.innerHTML = ""; document.getElementById("contrib").innerHTML = "";
  if (data.done) {
    current = null;
    document.getElementById("info").textContent = "nothing left to label: every pattern has a label (or was skipped)";
    document.body.dataset.patternId = ""; busy = false; return;
  }
  current = data.pattern;
  const pred = data.prediction || {};
  const conf = pred.ml_confidence !== undefined ? pred.ml_confidence : current.ml_confidence;
  document.getElementById("info").innerHTML =
    "<b>" + current.pattern_id + "</b> " + current.symbol + " " + (current.timeframe || "") + " " +
    current.pattern_type + " detected " + current.detection_time +
    " &nbsp; ml_confidence " + fmt(conf, 3) + " &nbsp; expected_r " + fmt(pred.expected_r, 2) +
    " &nbsp; validity " + fmt(current.validity_score, 3);
  document.body.dataset.patternId = current.pattern_id;
  if (pred.contributions && pred.contributions.length) {
    const rows = pred.contributions;
    document.getElementById("contrib").innerHTML = "<h4>top contributions</h4><table>" +
      rows.map(r => "<tr><td>" + r[0] + "</td><td>" + fmt(r[1], 3) + "</td></tr>").join("") + "</table>";
  }
  const jobs = [];
  if (data.chart) { jobs.push(Bokeh.embed.embed_item(data.chart, "chart")); }
  else { chart.textContent = "(no candles: the data of " + current.symbol + " is not available here)"; }
  data.neighbours.forEach((nb, i) => {
    const d = document.createElement("div"); d.className = "nb";
    const info = nb.info;
    d.innerHTML = "<div>" + info.symbol + " " + (info.outcome || "") + " R " + fmt(info.r_multiple, 2) +
      " (distance " + fmt(info.distance, 2) + ")</div><div id='nb" + i + "'></div>";
    near.appendChild(d);
    if (nb.chart) jobs.push(Bokeh.embed.embed_item(nb.chart, "nb" + i));
  });
  await Promise.all(jobs);
  document.body.dataset.chartDrawn = data.chart ? "1" : "0";
  busy = false;
}
document.addEventListener("keydown", async (ev) => {
  if (busy || !current) return;
  const key = ev.key.toLowerCase();
  if (key === "s") { skipped.push(current.pattern_id); document.getElementById("status").textContent = "skipped"; }
  else if (["w", "l", "i"].includes(key)) {
    busy = true;
    const r = await api("/api/label", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify({pattern_id: current.pattern_id, key: key})});
    document.getElementById("status").textContent = r.error ? ("error: " + r.error) :
      (r.pattern_id + " labelled " + r.user_label);
    if (r.error) { busy = false; return; }
  } else { return; }
  await show();
});
show();
</script>
</body></html>
"""
