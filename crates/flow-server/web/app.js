// The flow viewer's page: a flow list, the scheduler's Jobs and a flow
// page with the live DAG.
//
// Plain JavaScript, no build step and no library: the server lays the
// graph out (crates/flow-server/src/layout.rs) and this file draws it as
// SVG, follows the run's server-sent events and calls the JSON API.
'use strict';

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const main = $('#main');
  const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
  const stateClass = (s) => (s ? s.replace(/^state_/, '') : 'none');
  const stateText = (s) => (s ? s.replace(/^state_/, '').replace('_', ' ') : 'no record');
  // The SLA-missed mark of a flow record or a run (`sla_missed_at`).
  const slaMark = (r) => (r && r.sla_missed_at
    ? ` <span class="badge st-invalid sla-missed" title="SLA missed at ${esc(r.sla_missed_at)}">SLA missed</span>` : '');

  // ------------------------------------------------------------- helpers --

  function duration(ms) {
    if (ms == null) return '';
    if (ms < 1000) return `${ms} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} m ${Math.round(s % 60)} s`;
    return `${Math.floor(m / 60)} h ${m % 60} m`;
  }

  function time(t) {
    if (!t) return '–';
    const d = new Date(t);
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function elapsedOf(view) {
    if (view.duration_ms != null) return view.duration_ms;
    if (view.started_at && view.state === 'state_in_progress') {
      return Math.max(0, Date.now() - Date.parse(view.started_at));
    }
    return null;
  }

  // A step's job handle: where it runs, its backend ids, which action and
  // attempt submitted it, and whether a later engine adopted it.
  function jobText(job) {
    if (!job) return '<span class="muted">none recorded</span>';
    const ids = Object.entries(job.ids || {}).map(([k, v]) => `${esc(k)}=<code>${esc(v)}</code>`).join(' ');
    return `<code>${esc(job.kind)}</code> on <code>${esc(job.cluster)}</code>, action <code>${esc(job.action)}</code>,
      attempt ${job.attempt}${job.adopted ? ' <span class="badge adopted" title="taken over by a later engine after its own died">adopted</span>' : ''}
      <div class="ids">${ids}</div>`;
  }

  function notice(text, kind = 'info') {
    const n = $('#notice');
    n.textContent = text;
    n.className = `notice ${kind}`;
    n.hidden = !text;
  }

  // Today's timeperiod of a flow's qualifier, in UTC.
  function defaultTimeperiod(qualifier) {
    const d = new Date();
    const p = (n) => String(n).padStart(2, '0');
    const y = d.getUTCFullYear();
    switch (qualifier) {
      case 'yearly': return `${y}000000`;
      case 'monthly': return `${y}${p(d.getUTCMonth() + 1)}0000`;
      case 'daily': return `${y}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}00`;
      default: return `${y}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}${p(d.getUTCHours())}`;
    }
  }

  // ----------------------------------------------------------------- API --

  const token = {
    get: () => sessionStorage.getItem('flow-token'),
    set: (t) => sessionStorage.setItem('flow-token', t),
  };

  async function api(path, options = {}) {
    const headers = { Accept: 'application/json' };
    if (options.body !== undefined) headers['Content-Type'] = 'application/json';
    if (token.get()) headers.Authorization = `Bearer ${token.get()}`;
    const response = await fetch(path, {
      method: options.method || 'GET',
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      credentials: 'same-origin',
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401 && !options.retried) {
      const given = await askToken();
      if (given) return api(path, { ...options, retried: true });
    }
    if (!response.ok) {
      const error = new Error((data && data.error) || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function modal(id, setup) {
    return new Promise((resolve) => {
      const dialog = $(id);
      const done = (value) => { dialog.close(); cleanup(); resolve(value); };
      const cleanup = setup(dialog, done);
      dialog.addEventListener('cancel', () => { cleanup(); resolve(null); }, { once: true });
      dialog.showModal();
    });
  }

  function askToken() {
    return modal('#token', (dialog, done) => {
      const input = $('#token-input', dialog);
      input.value = '';
      const ok = () => { if (input.value) token.set(input.value); done(input.value || null); };
      const no = () => done(null);
      $('#token-ok', dialog).addEventListener('click', ok);
      $('#token-cancel', dialog).addEventListener('click', no);
      return () => {
        $('#token-ok', dialog).removeEventListener('click', ok);
        $('#token-cancel', dialog).removeEventListener('click', no);
      };
    });
  }

  function confirmAction(title, text) {
    return modal('#confirm', (dialog, done) => {
      $('#confirm-title', dialog).textContent = title;
      $('#confirm-text', dialog).textContent = text;
      const ok = () => done(true);
      const no = () => done(false);
      $('#confirm-ok', dialog).addEventListener('click', ok);
      $('#confirm-cancel', dialog).addEventListener('click', no);
      return () => {
        $('#confirm-ok', dialog).removeEventListener('click', ok);
        $('#confirm-cancel', dialog).removeEventListener('click', no);
      };
    });
  }

  // -------------------------------------------------------------- router --

  let page = null; // the flow page being shown, with its event source

  function route() {
    if (page) { page.close(); page = null; }
    document.body.removeAttribute('data-ready');
    notice('');
    const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
    if (parts[0] === 'flows' && parts[1] && parts[2]) {
      page = new FlowPage(parts[1], parts[2]);
      page.load();
    } else if (parts[0].split('?')[0] === 'jobs') {
      jobsPage(new URLSearchParams(location.hash.split('?')[1] || ''));
    } else {
      listPage(new URLSearchParams(location.hash.split('?')[1] || ''));
    }
  }

  window.addEventListener('hashchange', route);
  window.addEventListener('DOMContentLoaded', route);

  // ----------------------------------------------------------- flow list --

  async function listPage(params) {
    $('#crumbs').textContent = '';
    $('#live').className = 'live';
    main.className = 'list';
    main.innerHTML = '<p class="muted">Loading…</p>';
    try {
      const query = new URLSearchParams();
      for (const k of ['name', 'state', 'from', 'to', 'page']) if (params.get(k)) query.set(k, params.get(k));
      const [defs, records] = await Promise.all([
        api('/api/definitions'),
        api(`/api/flows?${query}`),
      ]);
      const flowRows = defs.flows.map((f) => `
        <tr data-flow="${esc(f.name)}">
          <td><b>${esc(f.name)}</b></td><td>${esc(f.time_qualifier)}</td><td class="num">${f.steps}</td>
          <td>${f.latest ? `<a href="#/flows/${encodeURIComponent(f.name)}/${f.latest.timeperiod}">${f.latest.timeperiod}</a>
            <span class="badge st-${stateClass(f.latest.state)}">${stateText(f.latest.state)}</span>` : '<span class="muted">never ran</span>'}</td>
          <td><input class="tp" value="${esc(defaultTimeperiod(f.time_qualifier))}" aria-label="timeperiod of ${esc(f.name)}" size="11">
            <button type="button" class="open">Open</button></td>
        </tr>`).join('');
      const states = ['', 'state_embryo', 'state_in_progress', 'state_processed', 'state_noop', 'state_invalid'];
      const recordRows = records.flows.map((r) => `
        <tr class="rec">
          <td>${r.served ? `<a href="#/flows/${encodeURIComponent(r.flow_name)}/${r.timeperiod}">${esc(r.flow_name)}</a>`
            : `<span class="muted" title="no flow file for it is served here">${esc(r.flow_name)}</span>`}</td>
          <td>${r.timeperiod}</td>
          <td><span class="badge st-${stateClass(r.state)}">${stateText(r.state)}</span>${slaMark(r)}</td>
          <td>${esc(r.run_mode.replace('run_mode_', ''))}</td>
          <td>${time(r.started_at)}</td><td>${time(r.finished_at)}</td>
          <td class="num">${duration(r.duration_ms)}</td>
        </tr>`).join('');
      main.innerHTML = `
        <section>
          <h1>Flows</h1>
          <table class="grid"><thead><tr><th>flow</th><th>period</th><th>steps</th><th>latest run</th><th>open a timeperiod</th></tr></thead>
          <tbody>${flowRows}</tbody></table>
        </section>
        <section>
          <h1>Runs</h1>
          <div class="filters">
            <label>flow <select id="f-name"><option value="">all</option>${defs.flows.map((f) => `<option${params.get('name') === f.name ? ' selected' : ''}>${esc(f.name)}</option>`).join('')}</select></label>
            <label>state <select id="f-state">${states.map((s) => `<option value="${s}"${params.get('state') === s ? ' selected' : ''}>${s ? stateText(s) : 'any'}</option>`).join('')}</select></label>
            <label>from <input id="f-from" size="11" value="${esc(params.get('from') || '')}" placeholder="YYYYMMDDHH"></label>
            <label>to <input id="f-to" size="11" value="${esc(params.get('to') || '')}" placeholder="YYYYMMDDHH"></label>
            <button type="button" id="f-apply">Filter</button>
          </div>
          <table class="grid"><thead><tr><th>flow</th><th>timeperiod</th><th>state</th><th>mode</th><th>started</th><th>finished</th><th>duration</th></tr></thead>
          <tbody>${recordRows || '<tr><td colspan="7" class="muted">no runs</td></tr>'}</tbody></table>
          <div class="pager">${records.page > 1 ? '<button type="button" id="p-prev">‹ newer</button>' : ''}
            page ${records.page}
            ${records.more ? '<button type="button" id="p-next">older ›</button>' : ''}</div>
        </section>`;
      main.querySelectorAll('tr[data-flow]').forEach((row) => {
        const open = () => {
          const tp = $('.tp', row).value.trim();
          location.hash = `#/flows/${encodeURIComponent(row.dataset.flow)}/${encodeURIComponent(tp)}`;
        };
        $('.open', row).addEventListener('click', open);
        $('.tp', row).addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
      });
      const go = (pageNo) => {
        const q = new URLSearchParams();
        const set = (k, v) => { if (v) q.set(k, v); };
        set('name', $('#f-name').value); set('state', $('#f-state').value);
        set('from', $('#f-from').value.trim()); set('to', $('#f-to').value.trim());
        if (pageNo > 1) q.set('page', pageNo);
        location.hash = `#/?${q}`;
      };
      $('#f-apply').addEventListener('click', () => go(1));
      if ($('#p-prev')) $('#p-prev').addEventListener('click', () => go(records.page - 1));
      if ($('#p-next')) $('#p-next').addEventListener('click', () => go(records.page + 1));
      document.body.dataset.ready = '1';
    } catch (e) {
      main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    }
  }

  // ----------------------------------------------------------- jobs page --

  // The Job states of the grid, with the given-up ones shown failed (as
  // `flow jobs` shows them).
  const JOB_STATES = ['embryo', 'in_progress', 'final_run', 'processed', 'noop', 'skipped', 'failed'];
  const jobClass = (job) => (job.given_up ? 'failed' : stateClass(job.state));

  // The timetable: one grid per time qualifier, a row per scheduled flow,
  // a column per period (newest first), each cell a link to its flow run.
  async function jobsPage(params) {
    $('#crumbs').innerHTML = '<a href="#/">flows</a> › <b>jobs</b>';
    $('#live').className = 'live';
    main.className = 'list';
    main.innerHTML = '<p class="muted">Loading…</p>';
    try {
      const query = new URLSearchParams();
      for (const k of ['periods', 'before']) if (params.get(k)) query.set(k, params.get(k));
      const data = await api(`/api/jobs?${query}`);
      const byQualifier = new Map();
      for (const f of data.flows) {
        if (!byQualifier.has(f.time_qualifier)) byQualifier.set(f.time_qualifier, []);
        byQualifier.get(f.time_qualifier).push(f);
      }
      const grids = [...byQualifier].map(([qualifier, flows]) => {
        const periods = [...new Set(flows.flatMap((f) => f.jobs.map((j) => j.timeperiod)))].sort().reverse();
        const rows = flows.map((f) => {
          const jobs = new Map(f.jobs.map((j) => [j.timeperiod, j]));
          const cells = periods.map((tp) => {
            const j = jobs.get(tp);
            if (!j) return '<td class="job empty"></td>';
            const title = [`${f.name} ${tp}: ${j.shown}`, j.run ? `run ${j.run}` : 'no run yet', j.last_event || ''].filter(Boolean).join('\n');
            return `<td class="job"><a class="cell st-${jobClass(j)}" data-flow="${esc(f.name)}" data-tp="${tp}" data-state="${jobClass(j)}"
              href="#/flows/${encodeURIComponent(f.name)}/${tp}" title="${esc(title)}">${j.number_of_failures ? j.number_of_failures : ''}</a></td>`;
          }).join('');
          return `<tr data-flow="${esc(f.name)}"><th class="flow"><b>${esc(f.name)}</b></th>${cells}</tr>`;
        }).join('');
        const head = periods.map((tp) => `<th class="tp" title="${tp}">${esc(tp.slice(4, qualifier === 'hourly' ? 10 : 8))}</th>`).join('');
        return `<section><h2>${esc(qualifier)}</h2>
          <table class="grid jobs" data-qualifier="${esc(qualifier)}"><thead><tr><th>flow</th>${head}</tr></thead><tbody>${rows}</tbody></table></section>`;
      }).join('');
      main.innerHTML = `
        <section>
          <h1>Jobs</h1>
          <p class="muted">The timetable of <code>flow schedule</code>: the newest ${data.periods} periods of each scheduled flow${data.before ? ` before ${esc(data.before)}` : ''}. A cell opens its flow run; its number counts failed runs.</p>
          <div class="legend-row">${JOB_STATES.map((s) => `<span class="badge st-${s}">${s.replace('_', ' ')}</span>`).join('')}</div>
        </section>
        ${grids || '<p class="muted">No scheduled flow is served here, or none has Jobs yet.</p>'}
        <div class="pager">${data.before ? '<a href="#/jobs" id="j-newest">‹ newest</a>' : ''}
          ${data.older ? `<a href="#/jobs?${new URLSearchParams({ periods: data.periods, before: data.older })}" id="j-older">older ›</a>` : ''}</div>`;
      document.body.dataset.ready = '1';
    } catch (e) {
      main.innerHTML = `<p class="error">${esc(e.message)}</p>`;
    }
  }

  // ----------------------------------------------------------- flow page --

  class FlowPage {
    constructor(name, timeperiod) {
      this.name = name;
      this.tp = timeperiod;
      this.base = `/api/flows/${encodeURIComponent(name)}/${encodeURIComponent(timeperiod)}`;
      this.nodes = [];     // from the graph JSON, with .el once drawn
      this.byName = new Map();
      this.selected = null; // node index
      this.logAfter = 0;
      this.view = { x: 20, y: 20, k: 1 };
      this.closed = false;
    }

    close() {
      this.closed = true;
      if (this.events) this.events.close();
      clearInterval(this.ticker);
    }

    async load() {
      $('#crumbs').innerHTML = `<a href="#/">flows</a> › <b>${esc(this.name)}</b> › ${esc(this.tp)}`;
      main.className = 'flow';
      main.innerHTML = '<p class="muted">Loading…</p>';
      let data;
      const t0 = performance.now();
      try {
        data = await api(this.base);
      } catch (e) {
        main.innerHTML = `<p class="error">${esc(e.message)}</p><p><a href="#/">back to the flows</a></p>`;
        return;
      }
      if (this.closed) return;
      this.data = data;
      this.nodes = data.graph.nodes;
      this.nodes.forEach((n, i) => this.byName.set(n.name, i));
      main.innerHTML = `
        <section class="bar">
          <div class="title">
            <h1>${esc(this.name)} <span class="tp">${esc(this.tp)}</span></h1>
            <span id="flow-state" class="badge"></span><span id="flow-sla"></span>
            <span id="flow-meta" class="muted"></span>
            <span id="flow-usage" class="muted" title="what every run's clusters used (and cost, with [cost] prices)"></span>
          </div>
          <div class="actions">
            <button type="button" id="btn-run" class="primary" title="fresh run: every step">Run</button>
            <button type="button" id="btn-recover" title="keep processed steps, run the rest">Recover</button>
            <button type="button" id="btn-cancel" title="cancel the run">Cancel</button>
            <label class="mode" title="the managed run mode stored on the flow record">managed mode
              <select id="run-mode"><option value="run_mode_nominal">start from the beginning</option>
              <option value="run_mode_recovery">continue from the last successful step</option></select></label>
            <button type="button" id="btn-run-mode">Store mode</button>
          </div>
        </section>
        <section class="work">
          <div class="canvas" id="canvas">
            <svg id="graph" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="flow graph"></svg>
            <div class="zoom"><button type="button" id="z-in" title="zoom in">+</button><button type="button" id="z-out" title="zoom out">−</button><button type="button" id="z-fit" title="fit">fit</button></div>
            <div class="legend">${['none', 'embryo', 'in_progress', 'processed', 'noop', 'invalid', 'canceled'].map((s) => `<span class="badge st-${s}">${s.replace('_', ' ')}</span>`).join('')}</div>
          </div>
          <aside id="side" class="side"></aside>
        </section>`;
      if (!data.can_run) main.querySelectorAll('.actions button').forEach((b) => { b.disabled = true; });
      const t1 = performance.now();
      this.draw();
      const t2 = performance.now();
      this.showFlow(data.flow);
      this.showUsage(data.usage);
      this.wire();
      this.select(null);
      this.loadRuns();
      this.follow();
      this.ticker = setInterval(() => this.tick(), 1000);
      // Ready once the graph has been painted.
      requestAnimationFrame(() => requestAnimationFrame(() => {
        window.__flowTimes = { start: t0, fetched: t1, drawn: t2, ready: performance.now() };
        window.__flowReady = performance.now();
        document.body.dataset.ready = '1';
      }));
    }

    // ---- drawing

    nodeLabel(n) {
      const d = duration(elapsedOf(n));
      const tries = n.attempts > 1 ? ` · try ${n.attempts}` : '';
      const adopted = n.job && n.job.adopted ? ' · adopted' : '';
      return (n.kind === 'step' ? d + tries + adopted : '');
    }

    draw() {
      const svg = $('#graph');
      const nodes = this.nodes;
      let d = '';
      for (const [a, b] of this.data.graph.edges) {
        const s = nodes[a]; const t = nodes[b];
        const x1 = s.x + s.w; const y1 = s.y + s.h / 2; const x2 = t.x; const y2 = t.y + t.h / 2;
        const mx = (x1 + x2) / 2;
        d += `M${x1} ${y1}C${mx} ${y1} ${mx} ${y2} ${x2} ${y2}`;
      }
      // Large graphs get their labels drawn only for the nodes in view,
      // and only when zoomed in enough to read them (see `labels`).
      this.large = nodes.length > 1500;
      const titles = !this.large;
      const parts = nodes.map((n, i) => {
        const label = n.name.length > 22 ? `${n.name.slice(0, 21)}…` : n.name;
        const shape = n.kind === 'step'
          ? `<rect width="${n.w}" height="${n.h}" rx="6"/>`
          : `<rect width="${n.w}" height="${n.h}" rx="${n.h / 2}"/>`;
        const text = this.large ? '' : n.kind === 'step'
          ? `<text x="10" y="16" class="name">${esc(label)}</text><text x="10" y="32" class="dur">${esc(this.nodeLabel(n))}</text>`
          : `<text x="${n.w / 2}" y="${n.h / 2 + 4}" class="name pill">${esc(n.name)}</text>`;
        return `<g class="node k-${n.kind} st-${stateClass(n.state)}" data-i="${i}" data-name="${esc(n.name)}" transform="translate(${n.x},${n.y})">${titles ? `<title>${esc(n.name)}</title>` : ''}${shape}${text}</g>`;
      });
      svg.innerHTML = `<g id="viewport"><path class="edges" d="${d}"/>${parts.join('')}<g id="labels"></g></g>`;
      const els = svg.querySelectorAll('g.node');
      els.forEach((el, i) => { nodes[i].el = el; });
      this.fit();
    }

    applyView() {
      const { x, y, k } = this.view;
      $('#viewport').setAttribute('transform', `translate(${x},${y}) scale(${k})`);
      $('#graph').classList.toggle('far', k < 0.45);
      if (this.large && !this.labelsQueued) {
        this.labelsQueued = true;
        requestAnimationFrame(() => { this.labelsQueued = false; this.labels(); });
      }
    }

    // The labels of the nodes in view, for large graphs.
    labels() {
      const layer = $('#labels');
      if (!layer) return;
      const { x, y, k } = this.view;
      if (k < 0.45) { layer.textContent = ''; return; }
      const box = $('#canvas').getBoundingClientRect();
      const x0 = -x / k; const y0 = -y / k; const x1 = x0 + box.width / k; const y1 = y0 + box.height / k;
      const parts = [];
      for (const n of this.nodes) {
        if (n.x + n.w < x0 || n.x > x1 || n.y + n.h < y0 || n.y > y1) continue;
        const label = n.name.length > 22 ? `${n.name.slice(0, 21)}…` : n.name;
        parts.push(n.kind === 'step'
          ? `<text x="${n.x + 10}" y="${n.y + 16}" class="name">${esc(label)}</text><text x="${n.x + 10}" y="${n.y + 32}" class="dur" data-i="${this.byName.get(n.name)}">${esc(this.nodeLabel(n))}</text>`
          : `<text x="${n.x + n.w / 2}" y="${n.y + n.h / 2 + 4}" class="name pill">${esc(n.name)}</text>`);
      }
      layer.innerHTML = parts.join('');
    }

    fit() {
      const box = $('#canvas').getBoundingClientRect();
      const g = this.data.graph;
      const pad = 24;
      const k = Math.min((box.width - pad * 2) / Math.max(g.width, 1), (box.height - pad * 2) / Math.max(g.height, 1), 1.25);
      this.view = { k, x: pad + Math.max(0, (box.width - pad * 2 - g.width * k) / 2), y: pad + Math.max(0, (box.height - pad * 2 - g.height * k) / 2) };
      this.applyView();
    }

    zoomAt(factor, cx, cy) {
      const v = this.view;
      const k = Math.min(4, Math.max(0.01, v.k * factor));
      this.view = { k, x: cx - (cx - v.x) * (k / v.k), y: cy - (cy - v.y) * (k / v.k) };
      this.applyView();
    }

    wire() {
      const svg = $('#graph');
      let drag = null;
      svg.addEventListener('pointerdown', (e) => {
        drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vy: this.view.y, moved: false, target: e.target };
        svg.setPointerCapture(e.pointerId);
      });
      svg.addEventListener('pointermove', (e) => {
        if (!drag) return;
        const dx = e.clientX - drag.x; const dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 4) drag.moved = true;
        if (drag.moved) {
          this.view.x = drag.vx + dx; this.view.y = drag.vy + dy;
          this.applyView();
        }
      });
      svg.addEventListener('pointerup', () => {
        if (drag && !drag.moved) {
          const node = drag.target.closest && drag.target.closest('g.node');
          this.select(node ? Number(node.dataset.i) : null);
        }
        drag = null;
      });
      svg.addEventListener('wheel', (e) => {
        e.preventDefault();
        const r = svg.getBoundingClientRect();
        this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
      }, { passive: false });
      const center = () => { const r = svg.getBoundingClientRect(); return [r.width / 2, r.height / 2]; };
      $('#z-in').addEventListener('click', () => this.zoomAt(1.25, ...center()));
      $('#z-out').addEventListener('click', () => this.zoomAt(0.8, ...center()));
      $('#z-fit').addEventListener('click', () => this.fit());
      $('#btn-run').addEventListener('click', () => this.act('run'));
      $('#btn-recover').addEventListener('click', () => this.act('recover'));
      $('#btn-cancel').addEventListener('click', () => this.act('cancel'));
      $('#btn-run-mode').addEventListener('click', () => this.storeRunMode());
    }

    // ---- state

    showFlow(flow) {
      this.data.flow = flow;
      const badge = $('#flow-state');
      if (!badge) return;
      badge.className = `badge st-${stateClass(flow && flow.state)}`;
      badge.textContent = flow ? stateText(flow.state) : 'never ran';
      badge.dataset.state = flow ? flow.state : '';
      const sla = $('#flow-sla');
      if (sla) sla.innerHTML = flow ? slaMark(flow) : '';
      $('#flow-meta').textContent = flow
        ? `${flow.run_mode.replace('run_mode_', '')} · window ${flow.start_timeperiod}–${flow.end_timeperiod} · started ${time(flow.started_at)}${flow.finished_at ? ` · took ${duration(flow.duration_ms)}` : ''}`
        : 'this timeperiod has no record yet';
      if (flow && (flow.run_mode === 'run_mode_nominal' || flow.run_mode === 'run_mode_recovery')) {
        $('#run-mode').value = flow.run_mode;
      }
      // The synthetic nodes follow the flow.
      const start = this.nodes[this.byName.get('start')];
      const finish = this.nodes[this.byName.get('finish')];
      if (start) this.paint(start, flow && flow.started_at ? 'state_processed' : null);
      if (finish) {
        const done = flow && flow.finished_at && flow.state !== 'state_in_progress';
        const map = { state_processed: 'state_processed', state_noop: 'state_noop', state_invalid: 'state_invalid', state_embryo: 'state_embryo' };
        this.paint(finish, done ? map[flow.state] || null : null);
      }
      if (this.selected != null && this.nodes[this.selected].kind !== 'step') this.renderSide();
    }

    paint(node, state) {
      node.state = state;
      if (node.el) node.el.setAttribute('class', `node k-${node.kind} st-${stateClass(state)}`);
    }

    updateStep(view) {
      const i = this.byName.get(view.name);
      if (i === undefined) return;
      const node = this.nodes[i];
      Object.assign(node, view);
      this.paint(node, view.state);
      const dur = this.large ? document.querySelector(`#labels .dur[data-i="${i}"]`) : node.el && node.el.querySelector('.dur');
      if (dur) dur.textContent = this.nodeLabel(node);
      if (this.selected === i) this.renderSide();
    }

    tick() {
      if (this.large) { this.labels(); return; }
      for (const n of this.nodes) {
        if (n.state === 'state_in_progress' && n.el) {
          const dur = n.el.querySelector('.dur');
          if (dur) dur.textContent = this.nodeLabel(n);
        }
      }
    }

    follow() {
      const live = $('#live');
      this.events = new EventSource(`${this.base}/events`);
      this.events.addEventListener('open', () => { live.className = 'live on'; live.textContent = 'live'; });
      this.events.addEventListener('error', () => { live.className = 'live off'; live.textContent = 'reconnecting…'; });
      const on = (kind, f) => this.events.addEventListener(kind, (e) => { if (!this.closed) f(JSON.parse(e.data)); });
      on('snapshot', (s) => {
        this.showFlow(s.flow);
        this.loadRuns();
        const known = new Set(s.steps.map((v) => v.name));
        for (const v of s.steps) this.updateStep(v);
        for (const n of this.nodes) {
          if (n.kind === 'step' && !known.has(n.name)) this.updateStep({ name: n.name, state: null, attempts: 0, started_at: null, finished_at: null, duration_ms: null, error: null });
        }
        this.catchUpLog();
      });
      on('flow', (f) => this.showFlow(f));
      on('step', (v) => this.updateStep(v));
      on('log', (line) => this.appendLog(line));
      on('run', (run) => {
        this.loadRuns();
        const mode = run.mode.replace('run_mode_', '');
        if (run.status === 'failed') notice(`${mode} (run ${run.id}) failed: ${run.error || ''}`, 'error');
        if (run.status === 'cancelling') notice(`cancelling run ${run.id}…`, 'ok');
        if (run.status === 'finished') notice(`${mode} (run ${run.id}) finished: ${stateText(run.outcome)}`, run.outcome === 'state_invalid' ? 'error' : 'ok');
      });
    }

    async loadRuns() {
      try {
        const data = await api(`${this.base}/runs`);
        this.runs = data.runs;
        this.showUsage(data.usage);
        if (this.selected == null || this.nodes[this.selected].kind !== 'step') this.renderSide();
      } catch (_) { /* the side panel keeps what it had */ }
    }

    // What the flow's clusters used, in all runs (`usage.text` says what
    // is unknown).
    showUsage(usage) {
      const el = $('#flow-usage');
      if (el) el.textContent = usage ? ` · ${usage.text}` : '';
    }

    // ---- side panel

    select(i) {
      if (this.selected != null && this.nodes[this.selected].el) this.nodes[this.selected].el.classList.remove('selected');
      this.selected = i;
      if (i != null && this.nodes[i].el) this.nodes[i].el.classList.add('selected');
      this.logAfter = 0;
      this.renderSide(true);
    }

    logTarget() {
      const n = this.selected == null ? null : this.nodes[this.selected];
      return n && n.kind === 'step' ? n.name : null;
    }

    renderSide(fresh = false) {
      const side = $('#side');
      if (!side) return;
      const n = this.selected == null ? null : this.nodes[this.selected];
      const keepLog = !fresh && $('#log') ? $('#log') : null;
      if (n && n.kind === 'step') {
        const def = this.stepDefinition && this.stepDefinition.name === n.name ? this.stepDefinition.def : null;
        const phase = (p) => {
          const names = def ? def[p].map((a) => `<li><code>${esc(a.name)}</code> <span class="muted">${esc(a.kind)}${a.skip ? ', skipped' : ''}${a.timeout_ms ? `, timeout ${duration(a.timeout_ms)}` : ''}</span></li>`).join('')
            : ((n.actions && n.actions[p]) || []).map((a) => `<li><code>${esc(a)}</code></li>`).join('');
          return `<div class="phase"><b>${p}</b> <span class="set set-${esc(n[p] || 'none')}">${esc(n[p] || '–')}</span><ul>${names || '<li class="muted">none</li>'}</ul></div>`;
        };
        side.innerHTML = `
          <h2>${esc(n.name)} <span id="step-state" class="badge st-${stateClass(n.state)}" data-state="${esc(n.state || '')}">${stateText(n.state)}</span></h2>
          <dl class="facts">
            <dt>attempts</dt><dd>${n.attempts || 0}</dd>
            <dt>started</dt><dd>${time(n.started_at)}</dd>
            <dt>finished</dt><dd>${time(n.finished_at)}</dd>
            <dt>duration</dt><dd>${duration(elapsedOf(n)) || '–'}</dd>
            <dt>job</dt><dd id="step-job">${jobText(n.job)}</dd>
          </dl>
          ${n.error ? `<p class="error" id="step-error">${esc(n.error)}</p>` : ''}
          ${n.rollbacks && n.rollbacks.length ? `<h3>Rollbacks</h3><ul class="rollbacks">${n.rollbacks.map((r) => `<li><code>${esc(r.action)}</code> ${esc(r.cause.replace('_', ' '))} ${time(r.at)}${r.error ? ` <span class="error">${esc(r.error)}</span>` : ' <span class="muted">ok</span>'}</li>`).join('')}</ul>` : ''}
          <div class="phases">${phase('pre')}${phase('main')}${phase('post')}</div>
          <div class="actions">
            <button type="button" id="btn-run-one" ${this.data.can_run ? '' : 'disabled'}>Run one</button>
            <button type="button" id="btn-run-from" ${this.data.can_run ? '' : 'disabled'}>Run from here</button>
          </div>
          <h3>Log <span class="muted">${esc(n.name)}.log</span></h3>`;
        $('#btn-run-one').addEventListener('click', () => this.act('run-one', n.name));
        $('#btn-run-from').addEventListener('click', () => this.act('run-from', n.name));
        if (!def) this.loadStepDefinition(n.name);
      } else {
        const runs = (this.runs || []).slice(0, 10).map((r) => `
          <tr title="run ${esc(r.id)} by ${esc(r.user)}@${esc(r.host)}"><td>${esc(r.mode.replace('run_mode_', ''))}${r.target ? ` <code>${esc(r.target)}</code>` : ''}</td>
          <td>${esc(r.status)}${r.outcome ? ` · ${stateText(r.outcome)}` : ''}${slaMark(r)}</td><td>${time(r.started_at)}</td>
          <td class="num">${duration(r.duration_ms)}</td><td class="muted">${esc(r.host)}</td>
          <td class="muted usage">${r.usage ? esc(r.usage.text) : ''}</td></tr>`).join('');
        side.innerHTML = `
          <h2>Runs</h2>
          <table class="grid small"><tbody>${runs || '<tr><td class="muted">no runs yet</td></tr>'}</tbody></table>
          <p class="muted">Click a step to see its actions, attempts and log.</p>
          <h3>Log <span class="muted">every line of this flow run</span></h3>`;
      }
      if (keepLog) {
        side.appendChild(keepLog);
      } else {
        const log = document.createElement('pre');
        log.id = 'log';
        log.className = 'log';
        side.appendChild(log);
        this.logAfter = 0;
        this.catchUpLog();
      }
    }

    async loadStepDefinition(name) {
      try {
        const d = await api(`${this.base}/steps/${encodeURIComponent(name)}`);
        this.stepDefinition = { name, def: d.definition };
        if (this.logTarget() === name) this.renderSide();
      } catch (_) { /* keep the names from the graph */ }
    }

    async catchUpLog() {
      const target = this.logTarget();
      const q = new URLSearchParams({ after: String(this.logAfter), limit: '2000' });
      if (target) q.set('step', target);
      try {
        const page = await api(`${this.base}/logs?${q}`);
        if (this.logTarget() !== target) return;
        for (const line of page.lines) this.appendLog(line);
      } catch (e) {
        const log = $('#log');
        if (log) log.textContent = e.message;
      }
    }

    appendLog(line) {
      const target = this.logTarget();
      if ((target !== null && line.step !== target) || line.position <= this.logAfter) return;
      const log = $('#log');
      if (!log) return;
      this.logAfter = line.position;
      const row = document.createElement('div');
      row.className = `line lv-${(line.level || '').toLowerCase()}`;
      const at = line.at ? line.at.slice(11, 23) : '';
      row.textContent = `${at} ${line.logger} ${line.level} ${line.message}`;
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.appendChild(row);
      if (atEnd) log.scrollTop = log.scrollHeight;
    }

    // ---- actions

    async act(mode, step) {
      const what = {
        run: 'Run every step (a fresh run: previous step records are forgotten)',
        recover: 'Recover: keep the processed steps and run the rest',
        cancel: 'Cancel: stop the run (or mark the unfinished steps canceled)',
        'run-one': `Run step “${step}” alone`,
        'run-from': `Run from step “${step}”: it, every step derived from it and every unfinished step`,
      }[mode];
      const ok = await confirmAction(`${mode} ${this.name}`,
        `${what} — flow ${this.name}, timeperiod ${this.tp}${step ? `, step ${step}` : ''}?`);
      if (!ok) return;
      try {
        const result = await api(`${this.base}/${mode}`, { method: 'POST', body: step ? { step } : {} });
        if (mode === 'cancel') {
          notice(result && result.canceled ? `canceled: ${result.canceled.join(', ') || 'nothing unfinished'}${result.problems.length ? ` (${result.problems.join('; ')})` : ''}` : 'cancelling…', 'ok');
        } else {
          notice(`${mode} started (run ${result.id}): ${result.steps_to_run} step(s) on ${result.clusters} cluster(s)`, 'ok');
        }
        this.loadRuns();
      } catch (e) {
        notice(e.message, 'error');
      }
    }

    async storeRunMode() {
      const mode = $('#run-mode').value;
      const label = $('#run-mode').selectedOptions[0].textContent;
      const ok = await confirmAction('Store the managed run mode',
        `Store “${label}” (${mode}) on the record of flow ${this.name}, timeperiod ${this.tp}?`);
      if (!ok) return;
      try {
        await api(`/api/flows/${encodeURIComponent(this.name)}/run-mode`, { method: 'POST', body: { run_mode: mode, timeperiod: this.tp } });
        notice(`managed run mode stored: ${label}`, 'ok');
      } catch (e) {
        notice(e.message, 'error');
      }
    }
  }
})();
