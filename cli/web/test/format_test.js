// Tests of the web page's logic (format.js). Runs under node
// (`node cli/web/test/format_test.js`) or in a browser page that loaded format.js
// (the browser test runs it there with `runFormatTests(BT)`); returns or prints the
// failures, exits non-zero under node when there is one.
'use strict';

function runFormatTests(BT) {
  const failures = [];
  let count = 0;
  const eq = (got, want, what) => {
    count++;
    const g = JSON.stringify(got), w = JSON.stringify(want);
    if (g !== w) failures.push(what + ': got ' + g + ', want ' + w);
  };

  // Sizes and rates: binary units, one decimal under 100.
  eq(BT.fmtSize(0), '0 B', 'size 0');
  eq(BT.fmtSize(1023), '1023 B', 'size 1023');
  eq(BT.fmtSize(1024), '1.0 KiB', 'size 1 KiB');
  eq(BT.fmtSize(1536), '1.5 KiB', 'size 1.5 KiB');
  eq(BT.fmtSize(150 * 1048576), '150 MiB', 'size 150 MiB');
  eq(BT.fmtSize(99.96 * 1024), '100 KiB', 'size rounding at 100');
  eq(BT.fmtSize(5 * 2 ** 40), '5.0 TiB', 'size TiB');
  eq(BT.fmtSize(-1), '–', 'size negative');
  eq(BT.fmtSize(undefined), '–', 'size missing');
  eq(BT.fmtRate(0), '0 B/s', 'rate 0');
  eq(BT.fmtRate(2.5 * 1048576), '2.5 MiB/s', 'rate MiB');
  eq(BT.fmtRate(NaN), '–', 'rate NaN');

  // ETAs as the RPC gives them (-1 not available, -2 unknown).
  eq(BT.fmtEta(-1), '', 'eta -1');
  eq(BT.fmtEta(-2), 'unknown', 'eta -2');
  eq(BT.fmtEta(0), '0 s', 'eta 0');
  eq(BT.fmtEta(45), '45 s', 'eta 45 s');
  eq(BT.fmtEta(185), '3 min 05 s', 'eta minutes');
  eq(BT.fmtEta(2 * 3600 + 3 * 60 + 9), '2 h 03 min', 'eta hours');
  eq(BT.fmtEta(4 * 86400 + 7 * 3600), '4 d 07 h', 'eta days');
  eq(BT.fmtEta(1000 * 86400), '∞', 'eta past 999 days');

  // Percent never says 100 before the end; ratios.
  eq(BT.fmtPercent(0.9999), '99.9%', 'percent 99.99');
  eq(BT.fmtPercent(1), '100%', 'percent 1');
  eq(BT.fmtPercent(0.123), '12.3%', 'percent');
  eq(BT.fmtRatio(-1), '–', 'ratio none');
  eq(BT.fmtRatio(-2), '∞', 'ratio infinite');
  eq(BT.fmtRatio(1.234), '1.23', 'ratio');
  eq(BT.fmtRatio(12.34), '12.3', 'ratio 10+');
  eq(BT.fmtRelative(0, 100), '–', 'relative never');
  eq(BT.fmtRelative(130, 100), 'in 30 s', 'relative future');
  eq(BT.fmtRelative(40, 100), '1 min 00 s ago', 'relative past');

  // Status words and filters.
  eq(BT.statusText({ status: 2, recheckProgress: 0.5 }), 'Checking 50.0%', 'status checking');
  eq(BT.statusText({ status: 4, error: 3, errorString: 'disk full' }), 'Error: disk full', 'status error');
  eq(BT.statusText({ status: 6 }), 'Seeding', 'status seeding');
  eq(BT.statusText({ status: 4, metadataPercentComplete: 0.25 }), 'Fetching metadata 25.0%', 'status metadata');
  eq(BT.statusClass({ status: 3 }), 'queued', 'class queued');
  eq(BT.matchesFilter({ status: 6, rateUpload: 0 }, 'active'), false, 'filter active idle');
  eq(BT.matchesFilter({ status: 6, rateUpload: 5 }, 'active'), true, 'filter active');
  eq(BT.matchesFilter({ status: 0, error: 1 }, 'error'), true, 'filter error');

  // Sorting: ties by name, ETA unknown last, reverse.
  const list = [
    { id: 1, name: 'b', eta: -1, percentDone: 0.5 },
    { id: 2, name: 'a10', eta: 50, percentDone: 0.1 },
    { id: 3, name: 'a9', eta: 10, percentDone: 0.5 },
  ];
  eq(BT.sortTorrents(list, 'name').map((t) => t.id), [3, 2, 1], 'sort name numeric');
  eq(BT.sortTorrents(list, 'eta').map((t) => t.id), [3, 2, 1], 'sort eta');
  eq(BT.sortTorrents(list, 'progress').map((t) => t.id), [2, 3, 1], 'sort progress ties by name');
  eq(BT.sortTorrents(list, 'progress', true).map((t) => t.id), [1, 3, 2], 'sort reverse');

  // The file tree: folders first, sizes and progress summed, wanted and priority mixed.
  const files = [
    { name: 'album/b.flac', length: 100, bytesCompleted: 100 },
    { name: 'album/cover.jpg', length: 10, bytesCompleted: 0 },
    { name: 'album/cd2/a.flac', length: 50, bytesCompleted: 25 },
  ];
  const stats = [
    { wanted: true, priority: 0 }, { wanted: false, priority: 0 }, { wanted: true, priority: 1 },
  ];
  const tree = BT.buildTree(files, stats);
  eq(tree.children.length, 1, 'tree one top folder');
  const album = tree.children[0];
  eq([album.name, album.length, album.done, album.wanted, album.priority], ['album', 160, 125, 'some', null], 'tree folder sums');
  eq(album.children.map((c) => c.name), ['cd2', 'b.flac', 'cover.jpg'], 'tree order');
  eq(album.files.slice().sort(), [0, 1, 2], 'tree folder files');
  eq(album.children[0].children[0].path, 'album/cd2/a.flac', 'tree path');
  eq(album.children[2].wanted, 'none', 'tree unwanted file');
  eq(BT.buildTree([{ name: 'one.iso', length: 7 }], null).children[0].index, 0, 'tree single file');
  eq(BT.buildTree([], []).wanted, 'all', 'tree empty');

  // Pieces: base64 bitfield, cells.
  const bits = BT.decodePieces('wA=='); // 11000000
  eq(Array.from(bits), [0xc0], 'pieces decode');
  eq(BT.pieceCells(bits, 4, 100), [1, 1, 0, 0], 'piece cells one each');
  eq(BT.pieceCells(bits, 4, 2), [1, 0], 'piece cells grouped');
  eq(BT.pieceCells(bits, 100, 10).length, 8, 'piece count bounded by the bitfield');
  eq(BT.decodePieces('!!').length, 0, 'pieces malformed');

  // .torrent file lists, and bad input refused with a reason.
  const enc = (s) => new TextEncoder().encode(s);
  eq(BT.torrentFiles(enc('d4:infod6:lengthi5e4:name3:abcee')), { name: 'abc', files: [{ name: 'abc', length: 5 }] }, 'torrent single');
  eq(BT.torrentFiles(enc('d4:infod5:filesld6:lengthi3e4:pathl1:x5:y.binee' + 'd6:lengthi4e4:pathl1:zeee4:name1:dee')).files,
    [{ name: 'd/x/y.bin', length: 3 }, { name: 'd/z', length: 4 }], 'torrent multi');
  const throws = (bytes, what) => {
    count++;
    try { BT.torrentFiles(bytes, 8, 1000); failures.push(what + ': no error'); } catch (e) {
      if (!/not a torrent file/.test(e.message)) failures.push(what + ': ' + e.message);
    }
  };
  throws(enc('hello, world'), 'torrent text');
  throws(enc('d4:infod4:name'), 'torrent truncated');
  throws(enc('l'.repeat(100) + 'e'.repeat(100)), 'torrent too deep');
  throws(enc('d4:infod4:name1:aee'), 'torrent without length');
  throws(enc('d4:infod6:lengthi5e4:name99:abcee'), 'torrent string past the end');

  return { count, failures };
}

if (typeof module !== 'undefined' && module.exports && require.main === module) {
  const r = runFormatTests(require('../format.js'));
  r.failures.forEach((f) => console.error('FAIL ' + f));
  console.log(r.count + ' checks, ' + r.failures.length + ' failed');
  process.exit(r.failures.length ? 1 : 0);
} else if (typeof module !== 'undefined' && module.exports) {
  module.exports = runFormatTests;
}
