// btcore web page: the logic without a page - formatting, the file tree, the piece
// map, a bounded bencode reader for .torrent files. No DOM here, so the tests
// (web/test/format_test.js) run it under node or in a browser alike.
'use strict';

(function (root) {
  const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

  /** A byte count for people: 1023 B, 1.5 KiB, 150 MiB (binary units). */
  function fmtSize(n) {
    if (typeof n !== 'number' || !isFinite(n) || n < 0) return '–';
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
    if (i === 0) return Math.round(n) + ' B';
    // One decimal under 100, none above; 99.96 rounds to "100", never "100.0".
    const s = n < 99.95 ? n.toFixed(1) : Math.round(n).toString();
    return s + ' ' + UNITS[i];
  }

  /** A rate in bytes per second: "0 B/s", "1.5 MiB/s". */
  function fmtRate(bps) {
    if (typeof bps !== 'number' || !isFinite(bps) || bps < 0) return '–';
    return fmtSize(bps) + '/s';
  }

  /**
   * An ETA in seconds as the RPC gives it (-1: not available, -2: unknown): "45 s",
   * "3 min 05 s", "2 h 03 min", "4 d 07 h"; past 999 days "∞".
   */
  function fmtEta(s) {
    if (typeof s !== 'number' || !isFinite(s)) return '';
    if (s === -1) return '';
    if (s < 0) return 'unknown';
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24;
    const m = Math.floor(s / 60) % 60, sec = s % 60;
    const two = (x) => (x < 10 ? '0' : '') + x;
    if (d > 999) return '∞';
    if (d > 0) return d + ' d ' + two(h) + ' h';
    if (h > 0) return h + ' h ' + two(m) + ' min';
    if (m > 0) return m + ' min ' + two(sec) + ' s';
    return sec + ' s';
  }

  /** A fraction 0..1 as a percent with one decimal; never "100.0" before the end. */
  function fmtPercent(f) {
    if (typeof f !== 'number' || !isFinite(f)) return '–';
    const p = Math.max(0, Math.min(1, f)) * 100;
    if (p >= 100) return '100%';
    return (Math.floor(p * 10) / 10).toFixed(1) + '%';
  }

  /** A share ratio (-1: none yet, -2: infinite). */
  function fmtRatio(r) {
    if (typeof r !== 'number' || !isFinite(r)) return '–';
    if (r === -2) return '∞';
    if (r < 0) return '–';
    return r < 10 ? r.toFixed(2) : r < 100 ? r.toFixed(1) : Math.floor(r).toString();
  }

  /** A Unix time (seconds) as local date and time; 0 or less: "never". */
  function fmtDate(t) {
    if (typeof t !== 'number' || t <= 0) return 'never';
    const d = new Date(t * 1000);
    const two = (x) => (x < 10 ? '0' : '') + x;
    return d.getFullYear() + '-' + two(d.getMonth() + 1) + '-' + two(d.getDate()) + ' ' +
      two(d.getHours()) + ':' + two(d.getMinutes());
  }

  /** A time from now in seconds, for announces: "in 5 min 00 s", "3 s ago". */
  function fmtRelative(t, now) {
    if (typeof t !== 'number' || t <= 0) return '–';
    const d = t - now;
    return d >= 0 ? 'in ' + fmtEta(d) : fmtEta(-d) + ' ago';
  }

  // Status codes of the RPC (rpc-spec "status"): what the filter and the list call them.
  const STATUS = ['Paused', 'Queued to check', 'Checking', 'Queued', 'Downloading', 'Queued to seed', 'Seeding'];

  /** The words of a torrent's status, with its error when it has one. */
  function statusText(t) {
    if (t.error && t.errorString) return 'Error: ' + t.errorString;
    let s = STATUS[t.status] || 'Unknown';
    if (t.status === 2 && typeof t.recheckProgress === 'number') s += ' ' + fmtPercent(t.recheckProgress);
    if (t.status === 4 && typeof t.metadataPercentComplete === 'number' && t.metadataPercentComplete < 1) {
      s = 'Fetching metadata ' + fmtPercent(t.metadataPercentComplete);
    }
    if (t.status === 0 && t.isFinished) s = 'Finished';
    return s;
  }

  /** Which filter a torrent falls in: downloading, seeding, paused, checking, queued, error. */
  function statusClass(t) {
    if (t.error) return 'error';
    switch (t.status) {
      case 0: return 'paused';
      case 1: case 2: return 'checking';
      case 3: case 5: return 'queued';
      case 4: return 'downloading';
      case 6: return 'seeding';
      default: return 'other';
    }
  }

  /** Whether `t` passes the filter `f` ('all', 'active' or a statusClass). */
  function matchesFilter(t, f) {
    if (!f || f === 'all') return true;
    if (f === 'active') return (t.rateDownload || 0) + (t.rateUpload || 0) > 0;
    return statusClass(t) === f;
  }

  const SORTS = {
    name: (a, b) => String(a.name || '').localeCompare(String(b.name || ''), undefined, { numeric: true, sensitivity: 'base' }),
    progress: (a, b) => (a.percentDone || 0) - (b.percentDone || 0),
    status: (a, b) => (a.status || 0) - (b.status || 0),
    down: (a, b) => (b.rateDownload || 0) - (a.rateDownload || 0),
    up: (a, b) => (b.rateUpload || 0) - (a.rateUpload || 0),
    eta: (a, b) => etaKey(a.eta) - etaKey(b.eta),
    ratio: (a, b) => (b.uploadRatio || 0) - (a.uploadRatio || 0),
    size: (a, b) => (b.totalSize || 0) - (a.totalSize || 0),
    added: (a, b) => (b.addedDate || 0) - (a.addedDate || 0),
    queue: (a, b) => (a.queuePosition || 0) - (b.queuePosition || 0),
  };
  function etaKey(e) { return typeof e === 'number' && e >= 0 ? e : Number.MAX_SAFE_INTEGER; }

  /** Torrents sorted by `key` (see SORTS), ties by name then id; a new array. */
  function sortTorrents(list, key, reverse) {
    const cmp = SORTS[key] || SORTS.name;
    const out = list.slice().sort((a, b) => cmp(a, b) || SORTS.name(a, b) || a.id - b.id);
    if (reverse) out.reverse();
    return out;
  }

  /**
   * The file tree of a torrent: `files` as torrent-get gives them ({name, length,
   * bytesCompleted}, names with '/'), `stats` its fileStats ({wanted, priority,
   * bytesCompleted}) or missing. A node: {name, path, children (array, folders first
   * then by name), index (a file's index, -1 for a folder), length, done, wanted
   * ('all' | 'none' | 'some'), priority (-1, 0, 1, or null when mixed), files (the
   * indices below it)}. The root's name is ''; a torrent whose files all sit in one
   * top folder has that folder as the root's only child.
   */
  function buildTree(files, stats) {
    const rootNode = newFolder('', '');
    (files || []).forEach((f, i) => {
      const st = (stats && stats[i]) || {};
      const parts = String(f.name || '').split('/').filter((p) => p !== '');
      if (parts.length === 0) parts.push('(unnamed)');
      let node = rootNode;
      for (let k = 0; k < parts.length - 1; k++) {
        let child = node.byName[parts[k]];
        if (!child || child.index >= 0) {
          child = newFolder(parts[k], node.path ? node.path + '/' + parts[k] : parts[k]);
          node.byName[parts[k]] = child;
          node.children.push(child);
        }
        node = child;
      }
      const name = parts[parts.length - 1];
      const leaf = {
        name,
        path: node.path ? node.path + '/' + name : name,
        children: [],
        index: i,
        length: f.length || 0,
        done: typeof f.bytesCompleted === 'number' ? f.bytesCompleted : st.bytesCompleted || 0,
        wanted: st.wanted === false || st.wanted === 0 ? 'none' : 'all',
        priority: typeof st.priority === 'number' ? st.priority : 0,
        files: [i],
      };
      node.children.push(leaf);
    });
    finish(rootNode);
    return rootNode;
  }

  function newFolder(name, path) {
    return { name, path, children: [], byName: Object.create(null), index: -1, length: 0, done: 0, wanted: 'all', priority: 0, files: [] };
  }

  function finish(node) {
    if (node.index >= 0) return;
    delete node.byName;
    node.children.sort((a, b) => ((a.index >= 0) - (b.index >= 0)) ||
      a.name.localeCompare(b.name, undefined, { numeric: true }));
    let want = 0, unwant = 0, prio;
    node.length = 0; node.done = 0; node.files = [];
    node.children.forEach((c) => {
      finish(c);
      node.length += c.length;
      node.done += c.done;
      node.files.push.apply(node.files, c.files);
      if (c.wanted !== 'none') want++;
      if (c.wanted !== 'all') unwant++;
      prio = prio === undefined ? c.priority : prio === c.priority ? prio : null;
    });
    node.wanted = unwant === 0 ? 'all' : want === 0 ? 'none' : 'some';
    node.priority = prio === undefined ? 0 : prio;
  }

  /** The `pieces` bitfield of torrent-get (base64) as bytes; empty when malformed. */
  function decodePieces(b64) {
    if (typeof b64 !== 'string') return new Uint8Array(0);
    try {
      const bin = typeof atob === 'function' ? atob(b64) : Buffer.from(b64, 'base64').toString('binary');
      const out = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
      return out;
    } catch (e) {
      return new Uint8Array(0);
    }
  }

  /**
   * The piece map in `cells` cells: each the fraction (0..1) of the pieces it stands
   * for that we have. With fewer pieces than cells, one cell per piece.
   */
  function pieceCells(bits, count, cells) {
    count = Math.max(0, Math.min(count | 0, bits.length * 8));
    const n = Math.max(1, Math.min(cells | 0, count));
    const out = new Array(count === 0 ? 0 : n).fill(0);
    for (let c = 0; c < out.length; c++) {
      const from = Math.floor(c * count / n), to = Math.floor((c + 1) * count / n);
      let have = 0;
      for (let p = from; p < to; p++) if (bits[p >> 3] & (0x80 >> (p & 7))) have++;
      out[c] = to > from ? have / (to - from) : 0;
    }
    return out;
  }

  /**
   * Reads a .torrent's file list before it is added (bounded: at most `maxDepth`
   * nesting, `maxItems` values). Returns {name, files: [{name, length}]} with names
   * as torrent-get gives them, or throws an Error saying what is wrong.
   */
  function torrentFiles(bytes, maxDepth, maxItems) {
    maxDepth = maxDepth || 64; maxItems = maxItems || 1000000;
    let pos = 0, items = 0;
    const dec = new TextDecoder('utf-8');
    const fail = (m) => { throw new Error('not a torrent file (' + m + ' at byte ' + pos + ')'); };
    function int(end) {
      const start = pos;
      while (pos < bytes.length && bytes[pos] !== end) pos++;
      if (pos >= bytes.length || pos === start) fail('bad number');
      const s = dec.decode(bytes.subarray(start, pos));
      if (!/^-?\d+$/.test(s)) fail('bad number');
      pos++;
      return Number(s);
    }
    function value(depth) {
      if (depth > maxDepth) fail('too deep');
      if (++items > maxItems) fail('too many values');
      if (pos >= bytes.length) fail('truncated');
      const c = bytes[pos];
      if (c === 0x69) { pos++; return int(0x65); }
      if (c === 0x6c) {
        pos++;
        const list = [];
        while (pos < bytes.length && bytes[pos] !== 0x65) list.push(value(depth + 1));
        if (pos >= bytes.length) fail('truncated');
        pos++;
        return list;
      }
      if (c === 0x64) {
        pos++;
        const dict = new Map();
        while (pos < bytes.length && bytes[pos] !== 0x65) {
          const k = value(depth + 1);
          if (!(k instanceof Uint8Array)) fail('a key that is not a string');
          dict.set(dec.decode(k), value(depth + 1));
        }
        if (pos >= bytes.length) fail('truncated');
        pos++;
        return dict;
      }
      if (c >= 0x30 && c <= 0x39) {
        const len = int(0x3a);
        if (len < 0 || pos + len > bytes.length) fail('truncated string');
        const s = bytes.subarray(pos, pos + len);
        pos += len;
        return s;
      }
      fail('unexpected byte');
    }
    const top = value(0);
    const info = top instanceof Map ? top.get('info') : null;
    if (!(info instanceof Map)) fail('no info dictionary');
    const text = (v) => (v instanceof Uint8Array ? dec.decode(v) : '');
    const name = text(info.get('name.utf-8') || info.get('name'));
    if (!name) fail('no name');
    const list = info.get('files');
    if (Array.isArray(list)) {
      return {
        name,
        files: list.map((f) => {
          const path = (f instanceof Map && (f.get('path.utf-8') || f.get('path'))) || [];
          return { name: [name].concat(path.map(text)).join('/'), length: f instanceof Map ? Number(f.get('length')) || 0 : 0 };
        }),
      };
    }
    const length = info.get('length');
    if (typeof length !== 'number') fail('no length');
    return { name, files: [{ name, length }] };
  }

  const api = {
    fmtSize, fmtRate, fmtEta, fmtPercent, fmtRatio, fmtDate, fmtRelative, statusText, statusClass,
    matchesFilter, sortTorrents, buildTree, decodePieces, pieceCells, torrentFiles, STATUS,
  };
  if (typeof module !== 'undefined' && module.exports) module.exports = api;
  else root.BT = api;
})(typeof self !== 'undefined' ? self : this);
