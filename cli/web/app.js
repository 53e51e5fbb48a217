// btcore web page: talks to the daemon only through Transmission's RPC
// (POST /transmission/rpc, the X-Transmission-Session-Id handshake, the browser's
// basic auth). Names are rpc-version 17's (camelCase fields, kebab-case methods and
// settings), which btcore and transmission-daemon both answer.
'use strict';

(function () {
  const BT = window.BT;
  const $ = (id) => document.getElementById(id);
  // Absolute, from the origin: a page opened as http://user:pass@host/ has a base URL
  // with credentials, which fetch refuses to resolve a relative URL against.
  const RPC = location.origin + '/transmission/rpc';
  const TICK_MS = 1000;
  const MAX_TORRENT_FILE = 10 << 20;

  // ---- RPC ----------------------------------------------------------------
  let sessionId = '';

  /** Calls `method`; resolves to its arguments, rejects with the daemon's message. */
  async function rpc(method, args) {
    const body = JSON.stringify({ method, arguments: args || {} });
    for (let attempt = 0; attempt < 3; attempt++) {
      let r;
      try {
        r = await fetch(RPC, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json', 'X-Transmission-Session-Id': sessionId },
          body,
          credentials: 'same-origin',
          cache: 'no-store',
        });
      } catch (e) {
        throw new Error('cannot reach the daemon (' + e.message + ')');
      }
      if (r.status === 409) {
        sessionId = r.headers.get('X-Transmission-Session-Id') || '';
        continue;
      }
      if (!r.ok) {
        const text = (await r.text()).replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
        throw new Error('HTTP ' + r.status + (text ? ': ' + text.slice(0, 300) : ''));
      }
      let j;
      try { j = await r.json(); } catch (e) { throw new Error('the daemon answered something that is not JSON'); }
      if (j.result !== 'success') throw new Error(method + ': ' + (j.result || 'no result'));
      return j.arguments || {};
    }
    throw new Error('the daemon keeps refusing the session id');
  }

  // ---- errors -------------------------------------------------------------
  const shownErrors = new Map();
  /** Shows an error at the top until dismissed; the same message is shown once. */
  function showError(msg) {
    msg = String(msg && msg.message ? msg.message : msg);
    if (shownErrors.has(msg)) return;
    const div = document.createElement('div');
    const span = document.createElement('span');
    span.textContent = msg;
    const x = document.createElement('button');
    x.textContent = 'Dismiss';
    x.addEventListener('click', () => { div.remove(); shownErrors.delete(msg); });
    div.append(span, x);
    $('errors').append(div);
    shownErrors.set(msg, div);
  }
  function clearConnectionErrors() {
    for (const [m, div] of shownErrors) if (m.startsWith('cannot reach')) { div.remove(); shownErrors.delete(m); }
  }

  // ---- state --------------------------------------------------------------
  const LIST_FIELDS = ['id', 'name', 'status', 'error', 'errorString', 'percentDone', 'recheckProgress',
    'metadataPercentComplete', 'rateDownload', 'rateUpload', 'eta', 'uploadRatio', 'peersConnected',
    'peersSendingToUs', 'peersGettingFromUs', 'labels', 'totalSize', 'sizeWhenDone', 'leftUntilDone',
    'queuePosition', 'addedDate', 'isFinished'];
  const TAB_FIELDS = {
    general: ['id', 'name', 'hashString', 'totalSize', 'sizeWhenDone', 'leftUntilDone', 'haveValid', 'downloadedEver',
      'uploadedEver', 'uploadRatio', 'downloadDir', 'magnetLink', 'addedDate', 'doneDate', 'activityDate',
      'dateCreated', 'creator', 'comment', 'isPrivate', 'pieceCount', 'pieceSize', 'status', 'error', 'errorString',
      'labels', 'queuePosition', 'seedRatioLimit', 'seedRatioMode', 'peersFrom'],
    files: ['id', 'files', 'fileStats'],
    peers: ['id', 'peers'],
    trackers: ['id', 'trackers', 'trackerStats'],
    pieces: ['id', 'pieces', 'pieceCount', 'pieceSize', 'percentDone'],
  };
  const torrents = new Map();
  const selected = new Set();
  let detailId = null, detailTab = 'general', detailData = null;
  let session = {};
  let ticking = false, fullRefresh = true, lastFocus = null;

  // ---- the list -----------------------------------------------------------
  const rows = new Map();

  function rowFor(t) {
    let r = rows.get(t.id);
    if (r) return r;
    r = document.createElement('div');
    r.className = 'row';
    r.setAttribute('role', 'option');
    r.tabIndex = -1;
    r.dataset.id = t.id;
    const cb = document.createElement('input');
    cb.type = 'checkbox';
    cb.className = 'sel';
    cb.tabIndex = -1;
    cb.addEventListener('click', (e) => { e.stopPropagation(); toggleSelect(t.id); });
    const cell = (cls) => { const d = document.createElement('div'); d.className = cls; return d; };
    r.els = {
      cb, name: cell('name'), down: cell('num down'), up: cell('num up'), eta: cell('num eta'),
      ratio: cell('num ratio'), peers: cell('num peers'), size: cell('num size'),
      progress: cell('progress'), status: cell('status'),
    };
    const bar = cell('pbar');
    bar.append(document.createElement('div'));
    r.els.progress.append(bar);
    r.els.bar = bar;
    r.append(cb, r.els.name, r.els.size, r.els.down, r.els.up, r.els.eta, r.els.ratio, r.els.peers, r.els.progress, r.els.status);
    r.addEventListener('click', (e) => {
      if (e.ctrlKey || e.metaKey) toggleSelect(t.id);
      else if (e.shiftKey && lastFocus != null) selectRange(lastFocus, t.id);
      else { selectOnly(t.id); openDetail(t.id); }
      lastFocus = t.id;
      r.focus();
    });
    r.addEventListener('dblclick', () => openDetail(t.id));
    rows.set(t.id, r);
    return r;
  }

  function updateRow(t) {
    const r = rowFor(t), e = r.els;
    // Rows whose torrent and selection did not change are left alone (a list of
    // thousands costs no DOM work on a quiet second).
    const sig = JSON.stringify(t) + selected.has(t.id);
    if (r.sig === sig) return;
    r.sig = sig;
    const cls = BT.statusClass(t);
    const pct = t.status === 2 && typeof t.recheckProgress === 'number' ? t.recheckProgress : t.percentDone;
    e.name.textContent = t.name || '(fetching metadata)';
    e.name.title = t.name || '';
    e.size.textContent = BT.fmtSize(t.sizeWhenDone != null ? t.sizeWhenDone : t.totalSize);
    e.down.textContent = '↓ ' + BT.fmtRate(t.rateDownload);
    e.up.textContent = '↑ ' + BT.fmtRate(t.rateUpload);
    e.eta.textContent = t.status === 4 ? BT.fmtEta(t.eta) : '';
    e.ratio.textContent = BT.fmtRatio(t.uploadRatio);
    e.ratio.title = 'ratio';
    e.peers.textContent = t.peersConnected != null ? t.peersConnected + ' p' : '';
    e.peers.title = (t.peersConnected || 0) + ' peers connected, ' + (t.peersSendingToUs || 0) + ' sending to us, ' +
      (t.peersGettingFromUs || 0) + ' receiving from us';
    e.bar.className = 'pbar ' + cls;
    e.bar.firstChild.style.width = (Math.max(0, Math.min(1, pct || 0)) * 100).toFixed(1) + '%';
    e.bar.setAttribute('role', 'progressbar');
    e.bar.setAttribute('aria-valuenow', Math.round((pct || 0) * 100));
    e.bar.setAttribute('aria-label', 'progress');
    const labels = Array.isArray(t.labels) && t.labels.length ? ' · ' + t.labels.join(', ') : '';
    e.status.textContent = BT.statusText(t) + ' · ' + BT.fmtPercent(t.percentDone) + labels;
    e.status.className = 'status' + (t.error ? ' err' : '');
    r.dataset.status = cls;
    const sel = selected.has(t.id);
    r.setAttribute('aria-selected', sel ? 'true' : 'false');
    e.cb.checked = sel;
    e.cb.setAttribute('aria-label', 'Select ' + (t.name || t.id));
  }

  function visibleTorrents() {
    const f = $('filter').value, label = $('label-filter').value;
    const q = $('search').value.trim().toLowerCase();
    const list = [];
    for (const t of torrents.values()) {
      if (!BT.matchesFilter(t, f)) continue;
      if (label && !(Array.isArray(t.labels) && t.labels.includes(label))) continue;
      if (q && !String(t.name || '').toLowerCase().includes(q)) continue;
      list.push(t);
    }
    return BT.sortTorrents(list, $('sort').value, $('sort-reverse').checked);
  }

  function renderList() {
    const list = $('list');
    const shown = visibleTorrents();
    const want = shown.map((t) => { updateRow(t); return rows.get(t.id); });
    // Re-append only when the order or the set changed (keeps focus and scroll).
    const now = Array.from(list.children);
    if (now.length !== want.length || now.some((el, i) => el !== want[i])) {
      const focused = document.activeElement;
      list.replaceChildren.apply(list, want);
      if (focused && want.includes(focused)) focused.focus();
    }
    for (const [id, r] of rows) if (!torrents.has(id)) rows.delete(id);
    $('empty').hidden = torrents.size !== 0;
    renderLabels();
    updateButtons();
    let down = 0, up = 0;
    for (const t of torrents.values()) { down += t.rateDownload || 0; up += t.rateUpload || 0; }
    const alt = session['alt-speed-enabled'] ? ' (alternative limits)' : '';
    $('totals').textContent = '↓ ' + BT.fmtRate(down) + '  ↑ ' + BT.fmtRate(up) + alt + ' · ' + torrents.size + ' torrents';
  }

  function renderLabels() {
    const sel = $('label-filter'), have = new Set();
    for (const t of torrents.values()) (t.labels || []).forEach((l) => have.add(l));
    const cur = Array.from(sel.options).slice(1).map((o) => o.value);
    const next = Array.from(have).sort();
    if (cur.join('\n') === next.join('\n')) return;
    const v = sel.value;
    sel.replaceChildren(new Option('Any', ''), ...next.map((l) => new Option(l, l)));
    sel.value = next.includes(v) ? v : '';
  }

  function updateButtons() {
    const n = selected.size;
    ['btn-start', 'btn-stop', 'btn-verify', 'btn-remove'].forEach((b) => { $(b).disabled = n === 0; });
    const shown = visibleTorrents();
    $('select-all').checked = shown.length > 0 && shown.every((t) => selected.has(t.id));
  }

  function selectOnly(id) { selected.clear(); selected.add(id); renderList(); }
  function toggleSelect(id) { if (selected.has(id)) selected.delete(id); else selected.add(id); renderList(); }
  function selectRange(a, b) {
    const ids = visibleTorrents().map((t) => t.id);
    const i = ids.indexOf(a), j = ids.indexOf(b);
    if (i < 0 || j < 0) return selectOnly(b);
    ids.slice(Math.min(i, j), Math.max(i, j) + 1).forEach((id) => selected.add(id));
    renderList();
  }

  // ---- live updates -------------------------------------------------------
  async function refreshTorrents() {
    const args = { fields: LIST_FIELDS };
    if (!fullRefresh) args.ids = 'recently-active';
    const a = await rpc('torrent-get', args);
    if (fullRefresh) {
      const seen = new Set((a.torrents || []).map((t) => t.id));
      for (const id of torrents.keys()) if (!seen.has(id)) forget(id);
      fullRefresh = false;
    }
    for (const t of a.torrents || []) torrents.set(t.id, Object.assign(torrents.get(t.id) || {}, t));
    for (const id of a.removed || []) forget(id);
  }

  function forget(id) {
    torrents.delete(id);
    selected.delete(id);
    const r = rows.get(id);
    if (r) r.remove();
    rows.delete(id);
    if (detailId === id) closeDetail();
  }

  async function refreshDetail() {
    if (detailId == null) return;
    // File names do not change once known: after the first answer, only their stats.
    const known = detailTab === 'files' && detailData && detailData.id === detailId &&
      Array.isArray(detailData.files) && detailData.files.length > 0;
    const fields = known ? ['id', 'fileStats'] : TAB_FIELDS[detailTab];
    const a = await rpc('torrent-get', { ids: [detailId], fields });
    const t = (a.torrents || [])[0];
    if (!t) { closeDetail(); return; }
    if (known) {
      t.files = detailData.files.map((f, i) => Object.assign({}, f, { bytesCompleted: ((t.fileStats || [])[i] || {}).bytesCompleted }));
    }
    detailData = t;
    renderDetail();
  }

  async function tick() {
    if (ticking) return;
    ticking = true;
    try {
      await refreshTorrents();
      clearConnectionErrors();
      renderList();
      await refreshDetail();
    } catch (e) {
      showError(e);
    } finally {
      ticking = false;
    }
  }

  /** After an action: the whole list again, at once. */
  function refreshNow() { fullRefresh = true; tick(); }

  // ---- actions ------------------------------------------------------------
  async function act(method, args) {
    try {
      await rpc(method, args);
    } catch (e) {
      showError(e);
    }
    refreshNow();
  }
  const ids = () => Array.from(selected);

  function askRemove() {
    if (selected.size === 0) return;
    const names = ids().map((id) => (torrents.get(id) || {}).name || '#' + id);
    $('remove-what').textContent = names.length === 1 ? 'Remove "' + names[0] + '"?' : 'Remove these ' + names.length + ' torrents? ' + names.join(', ');
    $('remove-data').checked = false;
    $('remove-dialog').showModal();
  }

  // ---- the detail ---------------------------------------------------------
  function openDetail(id) {
    if (detailId !== id) { detailData = null; filesTree = null; }
    detailId = id;
    $('detail').hidden = false;
    selectTab(detailTab, false);
    refreshDetail().catch(showError);
  }
  function closeDetail() {
    detailId = null; detailData = null; filesTree = null;
    $('detail').hidden = true;
  }

  function selectTab(name, focus) {
    detailTab = name;
    document.querySelectorAll('.tabs [role=tab]').forEach((b) => {
      const on = b.dataset.tab === name;
      b.setAttribute('aria-selected', on ? 'true' : 'false');
      b.tabIndex = on ? 0 : -1;
      if (on && focus) b.focus();
    });
    document.querySelectorAll('.pane').forEach((p) => { p.hidden = p.id !== 'pane-' + name; });
    if (detailId != null) { detailData = null; refreshDetail().catch(showError); }
  }

  function renderDetail() {
    const t = detailData;
    if (!t) return;
    const known = torrents.get(t.id) || {};
    $('detail-name').textContent = t.name || known.name || '#' + t.id;
    ({ general: renderGeneral, files: renderFiles, peers: renderPeers, trackers: renderTrackers, pieces: renderPieces })[detailTab](t);
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text != null) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function table(headers, rowsData, cls) {
    const tb = el('table', null, cls);
    const tr = el('tr');
    headers.forEach(([h, c]) => tr.append(el('th', h, c)));
    const thead = el('thead'); thead.append(tr);
    const body = el('tbody');
    rowsData.forEach((cells) => {
      const r = el('tr');
      cells.forEach(([v, c]) => r.append(el('td', v, c)));
      body.append(r);
    });
    tb.append(thead, body);
    return tb;
  }

  function renderGeneral(t) {
    const now = Date.now() / 1000;
    const from = t.peersFrom || {};
    const kv = [
      ['Status', BT.statusText(t)],
      ['Size', BT.fmtSize(t.totalSize) + (t.sizeWhenDone != null && t.sizeWhenDone !== t.totalSize ? ' (' + BT.fmtSize(t.sizeWhenDone) + ' wanted)' : '')],
      ['Have', BT.fmtSize(t.haveValid) + (t.leftUntilDone != null ? ', ' + BT.fmtSize(t.leftUntilDone) + ' left' : '')],
      ['Pieces', t.pieceCount != null ? t.pieceCount + ' × ' + BT.fmtSize(t.pieceSize) : '–'],
      ['Downloaded', BT.fmtSize(t.downloadedEver)],
      ['Uploaded', BT.fmtSize(t.uploadedEver) + ' (ratio ' + BT.fmtRatio(t.uploadRatio) + ')'],
      ['Location', t.downloadDir || '–'],
      ['Hash', t.hashString || '–'],
      ['Magnet link', t.magnetLink || '–'],
      ['Added', BT.fmtDate(t.addedDate)],
      ['Completed', BT.fmtDate(t.doneDate)],
      ['Last activity', t.activityDate > 0 ? BT.fmtRelative(t.activityDate, now) : 'never'],
      ['Created', BT.fmtDate(t.dateCreated) + (t.creator ? ' by ' + t.creator : '')],
      ['Comment', t.comment || '–'],
      ['Private', t.isPrivate ? 'yes' : 'no'],
      ['Labels', (t.labels || []).join(', ') || '–'],
      ['Queue position', t.queuePosition != null ? String(t.queuePosition) : '–'],
      ['Peers from', Object.keys(from).filter((k) => from[k]).map((k) => k.replace(/^from/, '') + ' ' + from[k]).join(', ') || '–'],
    ];
    const tb = el('table', null, 'kv');
    kv.forEach(([k, v]) => { const r = el('tr'); r.append(el('th', k), el('td', v)); tb.append(r); });
    $('pane-general').replaceChildren(tb);
  }

  // Files: the tree is built once per torrent and updated in place (focus stays).
  let filesTree = null;
  function renderFiles(t) {
    const pane = $('pane-files');
    const files = t.files || [];
    const tree = BT.buildTree(files, t.fileStats);
    const sig = t.id + ':' + files.map((f) => f.name).join('\n');
    if (!filesTree || filesTree.sig !== sig) {
      filesTree = { sig, nodes: new Map() };
      const ul = el('ul', null, 'tree');
      (tree.children.length === 1 && tree.children[0].index < 0 ? tree.children : [tree]).forEach((n) =>
        n === tree ? n.children.forEach((c) => ul.append(fileNode(c, t.id))) : ul.append(fileNode(n, t.id)));
      pane.replaceChildren(files.length ? ul : el('p', 'No files yet (the metadata has not arrived).'));
    }
    const walk = (n) => {
      const ui = filesTree.nodes.get(n.path);
      if (ui) {
        ui.cb.checked = n.wanted === 'all';
        ui.cb.indeterminate = n.wanted === 'some';
        ui.prog.textContent = BT.fmtPercent(n.length ? n.done / n.length : 1);
        ui.size.textContent = BT.fmtSize(n.done) + ' of ' + BT.fmtSize(n.length);
        if (ui.prio && document.activeElement !== ui.prio) ui.prio.value = n.priority == null ? '' : String(n.priority);
      }
      n.children.forEach(walk);
    };
    walk(tree);
    filesTree.tree = tree;
  }

  function fileNode(n, tid) {
    const li = el('li');
    const row = el('div', null, 'node');
    const cb = el('input');
    cb.type = 'checkbox';
    cb.setAttribute('aria-label', 'Download ' + n.path);
    cb.dataset.path = n.path;
    cb.addEventListener('change', () => {
      const key = cb.checked ? 'files-wanted' : 'files-unwanted';
      act('torrent-set', { ids: [tid], [key]: n.files });
    });
    const name = el('label', n.name + (n.index < 0 ? '/' : ''), 'fname' + (n.index < 0 ? ' folder' : ''));
    const id = 'f-' + tid + '-' + n.path.replace(/[^A-Za-z0-9_-]/g, '_') + '-' + (n.index < 0 ? 'd' : n.index);
    cb.id = id; name.htmlFor = id;
    const prio = el('select');
    prio.setAttribute('aria-label', 'Priority of ' + n.path);
    [['-1', 'Low'], ['0', 'Normal'], ['1', 'High'], ['', 'Mixed']].forEach(([v, l]) => prio.append(new Option(l, v)));
    prio.lastChild.disabled = true;
    prio.addEventListener('change', () => {
      const key = { '-1': 'priority-low', 0: 'priority-normal', 1: 'priority-high' }[prio.value];
      if (key) act('torrent-set', { ids: [tid], [key]: n.files });
    });
    const prog = el('span', null, 'fprog'), size = el('span', null, 'fsize');
    row.append(cb, name, prio, prog, size);
    li.append(row);
    filesTree.nodes.set(n.path, { cb, prog, size, prio });
    if (n.children.length) {
      const ul = el('ul', null, 'tree');
      n.children.forEach((c) => ul.append(fileNode(c, tid)));
      li.append(ul);
    }
    return li;
  }

  function renderPeers(t) {
    const peers = t.peers || [];
    if (!peers.length) { $('pane-peers').replaceChildren(el('p', 'No peers connected.')); return; }
    const rowsData = peers.map((p) => [
      [p.address + (p.port ? ':' + p.port : '')], [p.clientName || ''], [p.flagStr || '', 'opt'],
      ['↓ ' + BT.fmtRate(p.rateToClient), 'num'], ['↑ ' + BT.fmtRate(p.rateToPeer), 'num'],
      [BT.fmtPercent(p.progress), 'num'], [p.isEncrypted ? 'yes' : 'no', 'opt'], [p.isIncoming ? 'in' : 'out', 'opt'],
    ]);
    $('pane-peers').replaceChildren(table([['Address'], ['Client'], ['Flags', 'opt'], ['Down', 'num'], ['Up', 'num'],
      ['Has', 'num'], ['Encrypted', 'opt'], ['Direction', 'opt']], rowsData, 'peers'));
  }

  function renderTrackers(t) {
    const now = Date.now() / 1000;
    const stats = Array.isArray(t.trackerStats) && t.trackerStats.length ? t.trackerStats : null;
    const list = stats || t.trackers || [];
    if (!list.length) { $('pane-trackers').replaceChildren(el('p', 'No trackers.')); return; }
    const tiers = new Map();
    list.forEach((tr) => { const k = tr.tier || 0; if (!tiers.has(k)) tiers.set(k, []); tiers.get(k).push(tr); });
    const out = [];
    Array.from(tiers.keys()).sort((a, b) => a - b).forEach((k) => {
      const box = el('div', null, 'tier');
      box.append(el('h3', 'Tier ' + (k + 1)));
      const num = (v) => (typeof v === 'number' && v >= 0 ? String(v) : '–');
      box.append(table([['Tracker'], ['Last announce'], ['Result'], ['Seeders', 'num'], ['Leechers', 'num'], ['Next announce']],
        tiers.get(k).map((tr) => [
          [tr.announce || tr.host || ''],
          [stats ? BT.fmtRelative(tr.lastAnnounceTime, now) : '–'],
          [announceResult(tr, stats)],
          [num(tr.seederCount), 'num'], [num(tr.leecherCount), 'num'],
          [stats ? BT.fmtRelative(tr.nextAnnounceTime, now) : '–'],
        ])));
      out.push(box);
    });
    $('pane-trackers').replaceChildren(...out);
  }

  /** The last announce's result in words, or why there is none. */
  function announceResult(tr, stats) {
    if (!stats || (tr.lastAnnounceResult === undefined && tr.hasAnnounced === undefined)) return 'not reported by the daemon';
    if (tr.hasAnnounced === false) return 'not yet';
    if (tr.lastAnnounceSucceeded === false) return 'failed: ' + (tr.lastAnnounceResult || 'no reason given');
    return tr.lastAnnounceResult || 'ok';
  }

  function renderPieces(t) {
    const canvas = $('piece-map');
    const bits = BT.decodePieces(t.pieces);
    const count = t.pieceCount || 0;
    const cols = 64, cellsWanted = cols * 16;
    const cells = BT.pieceCells(bits, count, cellsWanted);
    const rowsN = Math.max(1, Math.ceil(cells.length / cols));
    const w = 10, h = 10;
    canvas.width = cols * w; canvas.height = rowsN * h;
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, canvas.width, canvas.height);
    cells.forEach((f, i) => {
      g.fillStyle = f >= 1 ? '#1f5fbf' : f > 0 ? 'rgba(31,95,191,' + (0.25 + 0.6 * f).toFixed(2) + ')' : '#d8d8d8';
      g.fillRect((i % cols) * w, Math.floor(i / cols) * h, w - 1, h - 1);
    });
    let have = 0;
    for (let p = 0; p < count; p++) if (bits[p >> 3] & (0x80 >> (p & 7))) have++;
    $('piece-legend').textContent = have + ' of ' + count + ' pieces' + (t.pieceSize ? ' of ' + BT.fmtSize(t.pieceSize) : '') +
      (cells.length < count ? ' (each square: ' + Math.ceil(count / cells.length) + ' pieces; darker: more of them here)' : '');
  }

  // ---- adding -------------------------------------------------------------
  let addBytes = null, addInfo = null;

  function openAdd(file) {
    $('add-form').reset();
    $('add-error').textContent = '';
    $('add-files').replaceChildren();
    addBytes = null; addInfo = null;
    $('add-dir').value = session['download-dir'] || '';
    $('add-dialog').showModal();
    if (file) readTorrentFile(file);
  }

  function readTorrentFile(file) {
    $('add-error').textContent = '';
    $('add-files').replaceChildren();
    addBytes = null; addInfo = null;
    if (file.size > MAX_TORRENT_FILE) { $('add-error').textContent = file.name + ': larger than 10 MiB, not a torrent file'; return; }
    const reader = new FileReader();
    reader.onload = () => {
      addBytes = new Uint8Array(reader.result);
      try {
        addInfo = BT.torrentFiles(addBytes);
      } catch (e) {
        // The daemon has the last word: it is sent anyway and its error shown.
        $('add-files').replaceChildren(el('p', 'The file list cannot be shown: ' + e.message));
        return;
      }
      const box = el('fieldset');
      box.append(el('legend', addInfo.name + ': ' + addInfo.files.length + ' file' + (addInfo.files.length === 1 ? '' : 's')));
      addInfo.files.forEach((f, i) => {
        const lab = el('label', null, 'check');
        const cb = el('input'); cb.type = 'checkbox'; cb.checked = true; cb.dataset.index = i;
        cb.setAttribute('aria-label', 'Download ' + f.name);
        lab.append(cb, document.createTextNode(f.name + ' (' + BT.fmtSize(f.length) + ')'));
        box.append(lab);
      });
      $('add-files').replaceChildren(box);
    };
    reader.onerror = () => { $('add-error').textContent = file.name + ': cannot be read'; };
    reader.readAsArrayBuffer(file);
  }

  function toBase64(bytes) {
    let s = '';
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }

  async function submitAdd(ev) {
    ev.preventDefault();
    $('add-error').textContent = '';
    const uri = $('add-uri').value.trim();
    const args = { paused: !$('add-start').checked };
    const dir = $('add-dir').value.trim();
    if (dir) args['download-dir'] = dir;
    if (addBytes) {
      args.metainfo = toBase64(addBytes);
      const unwanted = Array.from($('add-files').querySelectorAll('input[data-index]')).filter((c) => !c.checked).map((c) => Number(c.dataset.index));
      if (unwanted.length) args['files-unwanted'] = unwanted;
    } else if (uri) {
      args.filename = uri;
    } else {
      $('add-error').textContent = 'Choose a .torrent file, or paste a magnet link or URL.';
      return;
    }
    $('add-ok').disabled = true;
    try {
      const a = await rpc('torrent-add', args);
      const t = a['torrent-added'] || a['torrent-duplicate'];
      $('add-dialog').close();
      if (a['torrent-duplicate']) showError('Already added: ' + (t.name || t.hashString));
      refreshNow();
    } catch (e) {
      $('add-error').textContent = e.message;
    } finally {
      $('add-ok').disabled = false;
    }
  }

  // ---- settings -----------------------------------------------------------
  // [key, label, type]; a key the daemon does not report is shown disabled.
  const SETTINGS = [
    ['Speed limits', [
      ['speed-limit-down-enabled', 'Limit download', 'bool'], ['speed-limit-down', 'Download limit (KiB/s)', 'int'],
      ['speed-limit-up-enabled', 'Limit upload', 'bool'], ['speed-limit-up', 'Upload limit (KiB/s)', 'int'],
    ]],
    ['Alternative limits', [
      ['alt-speed-enabled', 'Use the alternative limits now', 'bool'],
      ['alt-speed-down', 'Alternative download limit (KiB/s)', 'int'], ['alt-speed-up', 'Alternative upload limit (KiB/s)', 'int'],
      ['alt-speed-time-enabled', 'Use them on a schedule', 'bool'],
      ['alt-speed-time-begin', 'From', 'minutes'], ['alt-speed-time-end', 'To', 'minutes'],
      ['alt-speed-time-day', 'On', 'days'],
    ]],
    ['Queues', [
      ['download-queue-enabled', 'Limit active downloads', 'bool'], ['download-queue-size', 'Active downloads', 'int'],
      ['seed-queue-enabled', 'Limit active seeds', 'bool'], ['seed-queue-size', 'Active seeds', 'int'],
      ['queue-stalled-enabled', 'Skip stalled torrents', 'bool'], ['queue-stalled-minutes', 'Stalled after (minutes)', 'int'],
    ]],
    ['Seeding', [
      ['seedRatioLimited', 'Stop seeding at a ratio', 'bool'], ['seedRatioLimit', 'Ratio', 'float'],
      ['idle-seeding-limit-enabled', 'Stop seeding when idle', 'bool'], ['idle-seeding-limit', 'Idle minutes', 'int'],
    ]],
    ['Folders', [
      ['download-dir', 'Default download folder', 'text'],
      ['incomplete-dir-enabled', 'Keep incomplete torrents elsewhere', 'bool'], ['incomplete-dir', 'Incomplete folder', 'text'],
    ]],
    ['Network', [
      ['peer-port', 'Peer port', 'int'],
      ['encryption', 'Encryption', ['required', 'preferred', 'tolerated']],
      ['dht-enabled', 'DHT', 'bool'], ['pex-enabled', 'Peer exchange (PEX)', 'bool'], ['lpd-enabled', 'Local peer discovery', 'bool'],
      ['peer-limit-global', 'Most peers overall', 'int'], ['peer-limit-per-torrent', 'Most peers per torrent', 'int'],
    ]],
  ];
  const DAYS = [['Sun', 1], ['Mon', 2], ['Tue', 4], ['Wed', 8], ['Thu', 16], ['Fri', 32], ['Sat', 64]];

  async function openSettings() {
    $('settings-error').textContent = '';
    try {
      session = await rpc('session-get', {});
    } catch (e) {
      showError(e);
      return;
    }
    const box = $('settings-fields');
    box.replaceChildren();
    SETTINGS.forEach(([title, fields]) => {
      const fs = el('fieldset');
      fs.append(el('legend', title));
      fields.forEach(([key, label, type]) => {
        const v = session[key];
        const lab = el('label', null, type === 'bool' ? 'check' : null);
        let input;
        if (type === 'bool') {
          input = el('input'); input.type = 'checkbox'; input.checked = !!v;
          lab.append(input, document.createTextNode(' ' + label));
        } else if (Array.isArray(type)) {
          input = el('select');
          type.forEach((o) => input.append(new Option(o, o)));
          input.value = v == null ? type[0] : v;
          lab.append(document.createTextNode(label + ' '), input);
        } else if (type === 'days') {
          input = el('span');
          DAYS.forEach(([d, bit]) => {
            const l = el('label', null, 'check');
            const c = el('input'); c.type = 'checkbox'; c.checked = ((v | 0) & bit) !== 0; c.dataset.bit = bit;
            l.append(c, document.createTextNode(d));
            input.append(l);
          });
          lab.append(document.createTextNode(label + ' '), input);
        } else {
          input = el('input');
          input.type = type === 'text' ? 'text' : type === 'minutes' ? 'time' : 'number';
          if (type === 'float') input.step = '0.01';
          if (type === 'int') { input.step = '1'; input.min = '0'; }
          input.value = v == null ? '' : type === 'minutes' ? minutesToTime(v) : String(v);
          lab.append(document.createTextNode(label + ' '), input);
        }
        input.name = key;
        input.dataset.kind = Array.isArray(type) ? 'choice' : type;
        input.id = 'set-' + key;
        if (v === undefined) {
          input.disabled = true;
          input.querySelectorAll && input.querySelectorAll('input').forEach((c) => { c.disabled = true; });
          lab.append(el('span', ' (not reported by the daemon)', 'unsupported'));
        }
        fs.append(lab);
      });
      box.append(fs);
    });
    $('settings-dialog').showModal();
  }

  function minutesToTime(m) {
    m = Math.max(0, Math.min(1439, m | 0));
    const two = (x) => (x < 10 ? '0' : '') + x;
    return two(Math.floor(m / 60)) + ':' + two(m % 60);
  }

  /** The settings whose values differ from what session-get said. */
  function settingsChanges() {
    const out = {};
    document.querySelectorAll('#settings-fields [data-kind]').forEach((input) => {
      if (input.disabled) return;
      const key = input.name, kind = input.dataset.kind;
      let v;
      if (kind === 'bool') v = input.checked;
      else if (kind === 'int') { if (input.value === '') return; v = parseInt(input.value, 10); }
      else if (kind === 'float') { if (input.value === '') return; v = parseFloat(input.value); }
      else if (kind === 'minutes') { const [h, m] = input.value.split(':').map(Number); v = (h | 0) * 60 + (m | 0); }
      else if (kind === 'days') { v = 0; input.querySelectorAll('input').forEach((c) => { if (c.checked) v |= Number(c.dataset.bit); }); }
      else v = input.value;
      if (typeof v === 'number' && !isFinite(v)) return;
      if (v !== session[key]) out[key] = v;
    });
    return out;
  }

  async function submitSettings(ev) {
    ev.preventDefault();
    $('settings-error').textContent = '';
    const changes = settingsChanges();
    if (Object.keys(changes).length) {
      try {
        await rpc('session-set', changes);
        session = await rpc('session-get', {});
      } catch (e) {
        $('settings-error').textContent = e.message;
        return;
      }
    }
    $('settings-dialog').close();
    renderList();
  }

  // ---- keyboard -----------------------------------------------------------
  function onListKey(e) {
    const rowsEls = Array.from($('list').children);
    const i = rowsEls.indexOf(document.activeElement);
    const focusRow = (k) => { const r = rowsEls[Math.max(0, Math.min(rowsEls.length - 1, k))]; if (r) { r.focus(); lastFocus = Number(r.dataset.id); } };
    if (e.key === 'ArrowDown') { focusRow(i + 1); e.preventDefault(); }
    else if (e.key === 'ArrowUp') { focusRow(i - 1); e.preventDefault(); }
    else if (e.key === 'Home') { focusRow(0); e.preventDefault(); }
    else if (e.key === 'End') { focusRow(rowsEls.length - 1); e.preventDefault(); }
    else if (e.key === ' ' && i >= 0) { toggleSelect(Number(rowsEls[i].dataset.id)); e.preventDefault(); }
    else if (e.key === 'Enter' && i >= 0) { const id = Number(rowsEls[i].dataset.id); if (!selected.has(id)) selectOnly(id); openDetail(id); }
    else if (e.key === 'Delete') askRemove();
    else if ((e.ctrlKey || e.metaKey) && e.key === 'a') { visibleTorrents().forEach((t) => selected.add(t.id)); renderList(); e.preventDefault(); }
  }

  function onGlobalKey(e) {
    if (document.querySelector('dialog[open]')) return;
    const tag = (e.target.tagName || '').toLowerCase();
    if (tag === 'input' || tag === 'select' || tag === 'textarea') return;
    if (e.key === 'a' && !e.ctrlKey && !e.metaKey) { openAdd(); e.preventDefault(); }
    else if (e.key === 's' && selected.size) act('torrent-start', { ids: ids() });
    else if (e.key === 'p' && selected.size) act('torrent-stop', { ids: ids() });
    else if (e.key === 'Escape' && detailId != null) closeDetail();
  }

  // ---- wiring -------------------------------------------------------------
  function init() {
    // Rows get focus through the list: the list itself is the one tab stop, and its
    // first (or last focused) row takes the focus.
    const list = $('list');
    list.tabIndex = 0;
    list.addEventListener('focus', () => {
      const r = (lastFocus != null && rows.get(lastFocus)) || list.firstElementChild;
      if (r) r.focus();
    });
    list.addEventListener('keydown', onListKey);
    list.addEventListener('focusin', (e) => { if (e.target.classList.contains('row')) list.tabIndex = -1; });
    list.addEventListener('focusout', (e) => { if (!list.contains(e.relatedTarget)) list.tabIndex = 0; });
    document.addEventListener('keydown', onGlobalKey);
    $('btn-add').addEventListener('click', () => openAdd());
    $('btn-start').addEventListener('click', () => act('torrent-start', { ids: ids() }));
    $('btn-stop').addEventListener('click', () => act('torrent-stop', { ids: ids() }));
    $('btn-verify').addEventListener('click', () => act('torrent-verify', { ids: ids() }));
    $('btn-remove').addEventListener('click', askRemove);
    $('btn-settings').addEventListener('click', openSettings);
    ['filter', 'label-filter', 'sort', 'sort-reverse'].forEach((id) => $(id).addEventListener('change', renderList));
    $('search').addEventListener('input', renderList);
    $('select-all').addEventListener('change', (e) => {
      const shown = visibleTorrents();
      if (e.target.checked) shown.forEach((t) => selected.add(t.id)); else shown.forEach((t) => selected.delete(t.id));
      renderList();
    });
    $('detail-close').addEventListener('click', closeDetail);
    document.querySelectorAll('.tabs [role=tab]').forEach((b) => {
      b.addEventListener('click', () => selectTab(b.dataset.tab, false));
      b.addEventListener('keydown', (e) => {
        const tabs = Array.from(document.querySelectorAll('.tabs [role=tab]'));
        const i = tabs.indexOf(b);
        if (e.key === 'ArrowRight' || e.key === 'ArrowLeft') {
          const n = tabs[(i + (e.key === 'ArrowRight' ? 1 : tabs.length - 1)) % tabs.length];
          selectTab(n.dataset.tab, true);
          e.preventDefault();
        }
      });
    });
    $('add-file').addEventListener('change', (e) => { if (e.target.files[0]) readTorrentFile(e.target.files[0]); });
    $('add-uri').addEventListener('input', () => {
      if ($('add-uri').value.trim()) { addBytes = null; addInfo = null; $('add-file').value = ''; $('add-files').replaceChildren(); }
    });
    $('add-form').addEventListener('submit', submitAdd);
    $('add-cancel').addEventListener('click', () => $('add-dialog').close());
    $('remove-form').addEventListener('submit', (e) => {
      e.preventDefault();
      $('remove-dialog').close();
      act('torrent-remove', { ids: ids(), 'delete-local-data': $('remove-data').checked });
    });
    $('remove-cancel').addEventListener('click', () => $('remove-dialog').close());
    $('settings-form').addEventListener('submit', submitSettings);
    $('settings-cancel').addEventListener('click', () => $('settings-dialog').close());
    // Drop a .torrent anywhere on the page.
    let dragDepth = 0;
    document.addEventListener('dragenter', (e) => { if (hasFiles(e)) { dragDepth++; $('drop').hidden = false; } });
    document.addEventListener('dragleave', () => { if (--dragDepth <= 0) { dragDepth = 0; $('drop').hidden = true; } });
    document.addEventListener('dragover', (e) => { if (hasFiles(e)) e.preventDefault(); });
    document.addEventListener('drop', (e) => {
      dragDepth = 0; $('drop').hidden = true;
      if (!hasFiles(e)) return;
      e.preventDefault();
      const f = e.dataTransfer.files[0];
      if (f) { if ($('add-dialog').open) readTorrentFile(f); else openAdd(f); }
    });
    // A magnet link or URL pasted outside a field opens the add dialog with it.
    document.addEventListener('paste', (e) => {
      const tag = (e.target.tagName || '').toLowerCase();
      if (tag === 'input' || tag === 'textarea' || document.querySelector('dialog[open]')) return;
      const text = (e.clipboardData && e.clipboardData.getData('text')) || '';
      if (/^(magnet:|https?:\/\/)/i.test(text.trim())) { openAdd(); $('add-uri').value = text.trim(); }
    });
    rpc('session-get', {}).then((s) => { session = s; }).catch(showError);
    tick();
    setInterval(() => { if (!document.hidden) tick(); }, TICK_MS);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) refreshNow(); });
  }
  function hasFiles(e) { return e.dataTransfer && Array.from(e.dataTransfer.types || []).includes('Files'); }

  init();
})();
