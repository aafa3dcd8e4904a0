/*
 * adstream dashboard: live view of campaign spend/pacing, traffic, model
 * quality and dead letters. Polls GET /v1/dashboard every 2 s and updates
 * uPlot charts in place (setData), one chart per name, never re-created.
 *
 * Vendored chart library: uPlot 1.6.32 (MIT, see uplot.LICENSE),
 * from `npm pack uplot@1` -> dist/uPlot.iife.min.js / dist/uPlot.min.css.
 *
 * Test hooks: body[data-updated] = successful refreshes, body[data-campaigns]
 * = campaign charts shown; each chart container has data-chart="<name>" and
 * data-points="<x values>" (names: campaign:<id>, traffic, model, dead_letters).
 * Plain ES2017, no modules, no build step.
 */
(function () {
  'use strict';

  var POLL_MS = 2000;
  var FETCH_TIMEOUT_MS = 5000;
  var MAX_CAMPAIGNS = 24;
  var charts = {};   // name -> { u: uPlot, el: container, height }
  var refreshes = 0;

  function $(id) { return document.getElementById(id); }

  // ---- data helpers -------------------------------------------------------
  function arr(a) { return Array.isArray(a) ? a : []; }
  function num(v) { return typeof v === 'number' && isFinite(v) ? v : null; }
  // Series aligned to n points; non-numbers become null (= gap in uPlot).
  function fit(a, n, scale) {
    a = arr(a);
    var out = new Array(n);
    for (var i = 0; i < n; i++) {
      var v = num(a[i]);
      out[i] = v === null ? null : v * (scale || 1);
    }
    return out;
  }
  function times(t) { return arr(t).map(function (v) { return (num(v) || 0) / 1000; }); }
  function micros(v) { v = num(v); return v === null ? null : v / 1e6; }
  function money(v) { return v == null ? '–' : v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 }); }
  function compact(v) {
    var a = Math.abs(v);
    return a >= 1e6 ? +(v / 1e6).toFixed(1) + 'M' : a >= 1e4 ? +(v / 1e3).toFixed(1) + 'k' : String(+v.toFixed(2));
  }
  function pct(v) { return v == null ? '–' : (v * 100).toFixed(1) + '%'; }
  function fixed(d) { return function (u, v) { return v == null ? '–' : v.toFixed(d); }; }

  // ---- chart management ---------------------------------------------------
  function width(el) { return Math.max(200, Math.floor(el.clientWidth || 300)); }

  // Create the chart on first use, otherwise just swap in the new data.
  function upsert(name, el, height, makeOpts, data) {
    var c = charts[name];
    if (!c) {
      var opts = makeOpts();
      opts.width = width(el);
      opts.height = height;
      opts.hooks = { setLegend: [latestLegend] };
      c = charts[name] = { u: new uPlot(opts, data, el), el: el, height: height };
      el.dataset.chart = name;
    } else {
      c.u.setData(data);
    }
    el.dataset.points = String(data[0].length);
  }

  // With no cursor over the chart, the legend shows the latest sample.
  function latestLegend(u) {
    var n = u.data[0].length;
    if (u.legend.idx == null && n > 0) u.setLegend({ idx: n - 1 }, false);
  }

  function drop(name) {
    var c = charts[name];
    if (!c) return;
    c.u.destroy();
    if (c.el.parentNode && c.el.parentNode.classList.contains('mini')) c.el.parentNode.remove();
    delete charts[name];
  }

  // Keep every chart as wide as its card.
  var resizePending = false;
  function resizeAll() {
    if (resizePending) return;
    resizePending = true;
    requestAnimationFrame(function () {
      resizePending = false;
      Object.keys(charts).forEach(function (k) {
        var c = charts[k], w = width(c.el);
        if (w !== c.u.width) c.u.setSize({ width: w, height: c.height });
      });
    });
  }
  window.addEventListener('resize', resizeAll);
  if (window.ResizeObserver) new ResizeObserver(resizeAll).observe(document.querySelector('main'));

  // Local wall-clock time, 24h; seconds only when ticks are under a minute apart.
  function pad(v) { return (v < 10 ? '0' : '') + v; }
  function clock(sec, withSec) {
    var d = new Date(sec * 1000);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + (withSec ? ':' + pad(d.getSeconds()) : '');
  }
  var X_AXIS = { space: 70, values: function (u, vs, ai, space, incr) {
    return vs.map(function (v) { return clock(v, incr < 60); });
  } };
  var TIME = { label: 'time', value: function (u, v) { return v == null ? '–' : clock(v, true); } };
  function axis(extra) {
    var a = { stroke: '#6b7785', grid: { stroke: '#eef1f4' }, ticks: { stroke: '#e3e7eb' } };
    Object.keys(extra || {}).forEach(function (k) { a[k] = extra[k]; });
    return a;
  }
  function line(label, color, extra) {
    var s = { label: label, stroke: color, width: 1.5, spanGaps: false, points: { show: false } };
    Object.keys(extra || {}).forEach(function (k) { s[k] = extra[k]; });
    return s;
  }
  // Room for the last x label on charts without a right-hand axis (null = auto).
  var PAD_RIGHT = [null, 24, null, null];
  // y range that always includes 0 and copes with all-null data.
  function fromZero(u, min, max) { return [0, max == null || max <= 0 ? 1 : max * 1.08]; }

  // ---- sections -----------------------------------------------------------
  function moneyVal(u, v) { return money(v); }
  function campaignOpts() {
    return {
      padding: PAD_RIGHT,
      cursor: { drag: { x: false, y: false } },
      scales: { y: { range: fromZero } },
      axes: [axis(X_AXIS), axis({ size: 50, values: function (u, vs) { return vs.map(compact); } })],
      series: [
        TIME,
        line('spend', '#2563eb', { width: 2, value: moneyVal }),
        line('budget', '#9aa5b1', { dash: [6, 4], value: moneyVal }),
        line('target', '#ea8a0c', { dash: [3, 3], value: moneyVal })
      ]
    };
  }

  function renderCampaigns(list, known) {
    var seen = {};
    list = arr(list).filter(function (c) {  // drop malformed entries and duplicate ids
      if (!c || c.campaign_id == null || seen[c.campaign_id]) return false;
      return (seen[c.campaign_id] = true);
    });
    list.sort(function (a, b) { return (num(b.spend_micros) || 0) - (num(a.spend_micros) || 0); });
    var shown = list.slice(0, MAX_CAMPAIGNS);
    var grid = $('campaigns');
    var keep = {};

    shown.forEach(function (c) {
      var name = 'campaign:' + c.campaign_id;
      keep[name] = true;
      var s = c.series || {};
      var t = times(s.t), n = t.length;
      var budget = Array.isArray(s.budget_micros) ? fit(s.budget_micros, n, 1e-6)
        : fit([], n).map(function () { return micros(c.budget_micros); });
      var data = [t, fit(s.spend_micros, n, 1e-6), budget, fit(s.target_micros, n, 1e-6)];

      var box = charts[name] ? charts[name].el.parentNode : null;
      if (!box) {
        box = document.createElement('div');
        box.className = 'mini';
        box.innerHTML = '<h3></h3><div class="chart"></div>';
      }
      grid.appendChild(box); // (re)append keeps highest-spend-first order
      var mode = String(c.mode == null ? 'pending' : c.mode);
      var h3 = box.querySelector('h3');
      h3.textContent = c.campaign_id + ' · ' + mode;
      h3.className = mode === 'pending' ? 'mode-pending' : '';
      h3.title = (c.day || '') + ' ' + (c.timezone || '') + ' · spent ' +
        money(micros(c.spend_micros)) + ' of ' + money(micros(c.budget_micros));
      upsert(name, box.querySelector('.chart'), 150, campaignOpts, data);
    });

    Object.keys(charts).forEach(function (k) {
      if (k.indexOf('campaign:') === 0 && !keep[k]) drop(k);
    });
    // The server samples the campaigns with the most spend; it says how many it knows.
    var more = Math.max(list.length, num(known) || 0) - shown.length;
    $('campaigns-more').textContent = more > 0 ? '+' + more + ' more' : '';
    $('campaigns-empty').hidden = shown.length > 0;
    document.body.dataset.campaigns = String(shown.length);
  }

  function renderTraffic(tr) {
    tr = tr || {};
    var t = times(tr.t), n = t.length;
    upsert('traffic', $('traffic'), 220, function () {
      return {
        scales: { rps: { range: fromZero }, rate: { range: [0, 1] } },
        axes: [
          axis(X_AXIS),
          axis({ scale: 'rps', size: 56 }),
          axis({ scale: 'rate', side: 1, size: 50, grid: { show: false },
                 values: function (u, vs) { return vs.map(function (v) { return Math.round(v * 100) + '%'; }); } })
        ],
        series: [TIME,
                 line('requests/s', '#2563eb', { scale: 'rps', value: fixed(1) }),
                 line('fill rate', '#16a34a', { scale: 'rate', value: function (u, v) { return pct(v); } })]
      };
    }, [t, fit(tr.requests_per_second, n), fit(tr.fill_rate, n)]);
  }

  function renderModel(m) {
    m = m || {};
    var t = times(m.t), n = t.length;
    $('model-version').textContent = m.live_version == null
      ? 'live model: none (serving the prior)' : 'live model: ' + m.live_version;
    upsert('model', $('model'), 220, function () {
      return {
        scales: { auc: { auto: true }, cal: { auto: true } },
        axes: [axis(X_AXIS), axis({ scale: 'auc', size: 50 }),
               axis({ scale: 'cal', side: 1, size: 50, grid: { show: false } })],
        series: [TIME,
                 line('click AUC', '#7c3aed', { scale: 'auc', value: fixed(3) }),
                 line('click calibration', '#db2777', { scale: 'cal', value: fixed(3) })]
      };
    }, [t, fit(m.click_auc, n), fit(m.click_calibration, n)]);
  }

  function renderDeadLetters(d) {
    d = d || {};
    var reasons = d.by_reason && typeof d.by_reason === 'object' ? d.by_reason : {};
    var rows = Object.keys(reasons).map(function (k) { return [k, num(reasons[k]) || 0]; });
    rows.sort(function (a, b) { return b[1] - a[1] || (a[0] < b[0] ? -1 : 1); });
    var body = $('dl-reasons');
    body.textContent = '';
    if (!rows.length) rows = [['(none)', 0]];
    rows.forEach(function (r) {
      var tr = body.insertRow(), a = tr.insertCell(), b = tr.insertCell();
      a.textContent = r[0];
      b.textContent = String(r[1]);
      b.className = 'num';
    });
    var t = times(d.t);
    upsert('dead_letters', $('dead_letters'), 160, function () {
      return {
        padding: PAD_RIGHT,
        scales: { y: { range: fromZero } },
        axes: [axis(X_AXIS), axis({ size: 50 })],
        series: [TIME, line('total dead letters', '#b42318', { value: fixed(0) })]
      };
    }, [t, fit(d.total, t.length)]);
  }

  // ---- polling loop -------------------------------------------------------
  function setStatus(ok, text, label) {
    var b = $('status');
    b.textContent = label || (ok ? 'live' : 'disconnected');
    b.className = 'badge ' + (ok ? 'badge-ok' : 'badge-err');
    b.title = text || '';
  }

  // Each section renders independently so one bad section can't hide the rest.
  function render(j) {
    var errors = [];
    [[renderCampaigns, j.campaigns, j.campaigns_known], [renderTraffic, j.traffic],
     [renderModel, j.model], [renderDeadLetters, j.dead_letters]].forEach(function (p) {
      try { p[0](p[1], p[2]); } catch (e) { errors.push(String(e && e.message || e)); }
    });
    if (errors.length) throw new Error(errors.join('; '));
  }

  async function refresh() {
    var ctl = window.AbortController ? new AbortController() : null;
    var timer = ctl ? setTimeout(function () { ctl.abort(); }, FETCH_TIMEOUT_MS) : 0;
    try {
      if (!window.uPlot) throw new Error('uPlot failed to load');
      var res = await fetch('/v1/dashboard', { cache: 'no-store', signal: ctl ? ctl.signal : undefined });
      if (!res.ok) throw new Error('HTTP ' + res.status);
      var j = await res.json();
      if (!j || typeof j !== 'object') throw new Error('bad payload');
    } catch (e) {
      clearTimeout(timer);
      setStatus(false, String(e && e.message || e));
      return;
    }
    clearTimeout(timer);
    try {
      render(j);
      refreshes += 1;
      document.body.dataset.updated = String(refreshes);
      setStatus(true);
      $('updated').textContent = 'updated ' + clock((num(j.now_ms) || Date.now()) / 1000, true);
    } catch (e) {
      setStatus(false, String(e && e.message || e), 'render error');
    }
  }

  // First fetch right away, then every POLL_MS after the previous one finishes.
  async function loop() {
    try { await refresh(); } catch (e) { /* refresh never throws; belt and braces */ }
    setTimeout(loop, POLL_MS);
  }
  loop();
})();
