#!/usr/bin/python3
"""The daemon's web page in a real browser (Debian's chromium through chromedriver and
python3-selenium), started by cli/tests/web.rs, which runs the daemon, a tracker and a
seeder on 127.0.0.1 and gives their places as arguments.

  browser.py btcore   --rpc PORT --torrent T --src DIR --bad-file F --markup-torrent T --dl DIR --bad-dir DIR --shots DIR --js-tests FILE
  browser.py transmission --rpc PORT --torrent T --src DIR --dl DIR --shots DIR
  browser.py auth --rpc PORT --torrent T --dl DIR --shots DIR

`btcore`: the built-in page. Bad input first (a file that is not a torrent, a bad
magnet link, a folder that cannot be written: the daemon's error is shown and nothing
is added), then a speed limit changed in the settings (session-get follows), a torrent
added by upload with one file deselected, its peers, files, trackers, pieces and
general tabs while it downloads from the seeder, the deselected file never on disk;
then the file wanted again and given high priority in the tree (it arrives), stop
and start, the keyboard path, the phone size, removal with data, a torrent whose
names hold HTML (shown as text, never run), and a .torrent dropped on the page. The page's JavaScript tests run in the page too.
`transmission`: Transmission's own web client served with --web-root: a speed limit in
its preferences, add by upload, b.bin deselected in the inspector's files tab before
it starts, the peers and trackers tabs while it downloads, the deselected file never
on disk, stop and start, removal with data from its context menu.
`auth`: the page behind --rpc-auth (credentials given once, in the address).

Every wait has a deadline; any failure exits non-zero with what was on the page.
"""

import argparse
import base64
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

WAIT = 60.0


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


class Rpc:
    """A minimal RPC client for checks from outside the page."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/transmission/rpc"
        self.sid = ""

    def call(self, method, args=None):
        body = json.dumps({"method": method, "arguments": args or {}}).encode()
        for _ in range(3):
            req = urllib.request.Request(self.url, data=body, method="POST")
            req.add_header("X-Transmission-Session-Id", self.sid)
            req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.sid = e.headers.get("X-Transmission-Session-Id", "")
                    continue
                raise
        raise RuntimeError("no session id")

    def torrents(self, fields=("id", "name", "percentDone", "status")):
        return self.call("torrent-get", {"fields": list(fields)})["arguments"]["torrents"]


def browser(width=1280, height=900):
    o = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--no-first-run", "--disable-extensions", "--disable-background-networking",
              f"--window-size={width},{height}", "--lang=en-US"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


class Page:
    def __init__(self, d, shots):
        self.d = d
        self.shots = shots

    def fail(self, msg):
        try:
            self.shot("failure")
            body = self.d.find_element(By.TAG_NAME, "body").text
            logs = self.d.get_log("browser")
        except WebDriverException as e:
            body, logs = f"(page unreadable: {e})", []
        print(f"FAIL: {msg}\n--- page text ---\n{body[:4000]}\n--- console ---", file=sys.stderr)
        for entry in logs[-30:]:
            print(entry, file=sys.stderr)
        sys.exit(1)

    def wait(self, what, cond, timeout=WAIT):
        v, last = self.poll(cond, timeout)
        if v:
            log(f"ok: {what}")
            return v
        self.fail(f"timed out waiting for {what}" + (f" ({last})" if last else ""))

    def poll(self, cond, timeout):
        """`cond()` once true within `timeout` s (or a false value, and the last
        WebDriver error)."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                v = cond()
                if v:
                    return v, None
            except WebDriverException as e:
                last = e
            time.sleep(0.2)
        return None, last

    def el(self, css):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def els(self, css):
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def text(self, css):
        found = self.els(css)
        return found[0].text if found else ""

    def click(self, css):
        self.el(css).click()

    def shot(self, name):
        os.makedirs(self.shots, exist_ok=True)
        path = os.path.join(self.shots, f"{name}.png")
        self.d.save_screenshot(path)
        log(f"screenshot {path}")


def same(path, want):
    """Whether `path` holds the bytes of `want`."""
    try:
        with open(path, "rb") as f, open(want, "rb") as g:
            return f.read() == g.read()
    except OSError:
        return False


def check(page, cond, msg):
    if not cond:
        page.fail(msg)


# ---------------------------------------------------------------- the built-in page

def builtin(a):
    rpc = Rpc(a.rpc)
    d = browser()
    p = Page(d, a.shots)
    try:
        d.get(f"http://127.0.0.1:{a.rpc}/")
        p.wait("the page to load its list", lambda: "0 torrents" in p.text("#totals"))
        p.shot("main-empty")

        # The page's own JavaScript tests, in this browser.
        with open(a.js_tests) as f:
            src = f.read()
        r = d.execute_script(src + "\nreturn runFormatTests(BT);")
        check(p, r["count"] > 30 and not r["failures"], f"JavaScript tests: {r}")
        log(f"ok: {r['count']} JavaScript checks")

        # Bad input: each shows the daemon's error, and nothing is added.
        def add_error(fill):
            p.click("#btn-add")
            p.wait("the add dialog", lambda: p.el("#add-dialog").is_displayed())
            fill()
            p.click("#add-ok")
            msg = p.wait("an error in the add dialog", lambda: p.text("#add-error"))
            check(p, p.el("#add-dialog").is_displayed(), "the dialog closed on an error")
            p.click("#add-cancel")
            check(p, rpc.torrents() == [], f"bad input added a torrent: {rpc.torrents()}")
            return msg

        msg = add_error(lambda: p.el("#add-file").send_keys(a.bad_file))
        check(p, "invalid or corrupt torrent" in msg, f"non-torrent file: {msg!r}")
        msg = add_error(lambda: p.el("#add-uri").send_keys("magnet:?xt=urn:btih:nothex"))
        check(p, "torrent-add" in msg and "magnet" in msg.lower(), f"bad magnet: {msg!r}")

        def bad_dir():
            p.el("#add-file").send_keys(a.torrent)
            p.wait("the file list of the torrent", lambda: p.els("#add-files input[data-index]"))
            box = p.el("#add-dir")
            box.clear()
            box.send_keys(a.bad_dir)
        msg = add_error(bad_dir)
        check(p, "torrent-add" in msg and a.bad_dir in msg, f"unwritable folder: {msg!r}")
        p.shot("add-error")

        # A speed limit changed in the settings: session-get follows.
        p.click("#btn-settings")
        p.wait("the settings dialog", lambda: p.el("#settings-dialog").is_displayed())
        p.shot("settings")
        en = p.el("#set-speed-limit-down-enabled")
        if not en.is_selected():
            en.click()
        box = p.el("#set-speed-limit-down")
        box.clear()
        box.send_keys("256")
        p.click("#settings-ok")
        p.wait("the settings dialog to close", lambda: not p.el("#settings-dialog").is_displayed())
        s = rpc.call("session-get")["arguments"]
        check(p, s.get("speed-limit-down") == 256 and s.get("speed-limit-down-enabled") is True,
              f"session-get after the change: {s.get('speed-limit-down')}, {s.get('speed-limit-down-enabled')}")
        log("ok: session-get follows the speed limit")

        # Add by upload, one file deselected before anything downloads.
        p.click("#btn-add")
        p.el("#add-file").send_keys(a.torrent)
        boxes = p.wait("the file list", lambda: p.els("#add-files input[data-index]"))
        names = [b.get_attribute("aria-label") for b in boxes]
        check(p, len(boxes) == 2, f"files offered: {names}")
        for b in boxes:
            if b.get_attribute("aria-label").endswith("sub/b.bin"):
                b.click()
        p.shot("add-dialog")
        p.click("#add-ok")
        p.wait("the add dialog to close", lambda: not p.el("#add-dialog").is_displayed())
        row = p.wait("the torrent in the list", lambda: p.els("#list .row"))[0]
        check(p, "payload" in row.text, f"row: {row.text}")
        t = rpc.call("torrent-get", {"fields": ["wanted"]})["arguments"]["torrents"][0]
        check(p, t["wanted"] in ([1, 0], [True, False]), f"wanted after the add: {t['wanted']}")

        row.click()
        p.wait("the detail", lambda: p.el("#detail").is_displayed())
        p.click("#tab-peers")
        p.wait("the seeder in the peers tab", lambda: "127.0.0.1" in p.text("#pane-peers"))
        p.shot("tab-peers")
        p.click("#tab-files")
        p.wait("the file tree", lambda: len(p.els("#pane-files input[type=checkbox]")) >= 3)
        states = {c.get_attribute("data-path"): c.is_selected() for c in p.els("#pane-files input[type=checkbox]")}
        check(p, states.get("payload/a.bin") is True and states.get("payload/sub/b.bin") is False, f"tree: {states}")
        p.shot("tab-files")
        p.click("#tab-trackers")
        p.wait("the tracker", lambda: "announce" in p.text("#pane-trackers"))
        p.shot("tab-trackers")
        p.click("#tab-pieces")
        p.wait("the piece map", lambda: "pieces" in p.text("#piece-legend"))
        p.shot("tab-pieces")
        p.click("#tab-general")
        p.wait("the general tab", lambda: "magnet:" in p.text("#pane-general"))
        p.shot("tab-general")
        p.shot("main-downloading")

        p.wait("the wanted file complete in the list",
               lambda: "100%" in p.text("#list .row .status"), timeout=90)
        a_bin = os.path.join(a.dl, "payload", "a.bin")
        b_bin = os.path.join(a.dl, "payload", "sub", "b.bin")
        p.wait("a.bin on disk, the seeder's bytes", lambda: same(a_bin, os.path.join(a.src, "a.bin")))
        check(p, not os.path.exists(b_bin), "the deselected file is on disk")
        p.click("#tab-files")
        p.wait("the files tab at 100% for a.bin", lambda: "100%" in p.text("#pane-files"))
        p.shot("tab-files-done")
        p.shot("main")

        # The tree's toggles take effect: b.bin wanted (it then arrives), high priority.
        p.el('#pane-files input[data-path="payload/sub/b.bin"]').click()
        p.wait("the daemon to want b.bin", lambda: rpc.call("torrent-get", {"fields": ["wanted"]})
               ["arguments"]["torrents"][0]["wanted"] in ([1, 1], [True, True]))
        prio = p.el('#pane-files select[aria-label="Priority of payload/sub/b.bin"]')
        prio.find_element(By.CSS_SELECTOR, 'option[value="1"]').click()
        p.wait("the daemon to give b.bin high priority", lambda: rpc.call("torrent-get", {"fields": ["priorities"]})
               ["arguments"]["torrents"][0]["priorities"][1] == 1)
        p.wait("b.bin on disk, the seeder's bytes", lambda: same(b_bin, os.path.join(a.src, "sub", "b.bin")), timeout=90)

        # Stop and start the selection with the buttons.
        p.click("#btn-stop")
        p.wait("the daemon to stop it", lambda: rpc.torrents()[0]["status"] == 0)
        p.wait("the list to say so", lambda: any(w in p.text("#list .row .status") for w in ("Paused", "Finished")))
        p.click("#btn-start")
        p.wait("the daemon to start it", lambda: rpc.torrents()[0]["status"] != 0)

        # Keyboard: the list is a tab stop, arrows and Enter open the detail.
        p.click("#detail-close")
        d.execute_script("document.getElementById('select-all').focus()")
        d.switch_to.active_element.send_keys(Keys.TAB)
        focused = d.switch_to.active_element.get_attribute("class") or ""
        check(p, focused.split() == ["row"], f"Tab reaches {focused!r}, not a row of the list")
        p.d.switch_to.active_element.send_keys(Keys.ENTER)
        p.wait("the detail by keyboard", lambda: p.el("#detail").is_displayed())

        # Phone-sized.
        d.set_window_size(390, 844)
        time.sleep(0.5)
        p.shot("phone")
        d.set_window_size(1280, 900)

        # Remove with its data, asked first.
        p.click("#btn-remove")
        p.wait("the remove dialog", lambda: p.el("#remove-dialog").is_displayed())
        p.click("#remove-data")
        p.click("#remove-ok")
        p.wait("the list to be empty", lambda: not p.els("#list .row"))
        p.wait("the data to be deleted", lambda: not os.path.exists(a_bin))
        check(p, rpc.torrents() == [], "the daemon still has the torrent")
        check(p, not os.path.exists(b_bin), "b.bin was not deleted")

        # A name with markup is shown as text, never run (the page writes no HTML).
        p.click("#btn-add")
        p.el("#add-file").send_keys(a.markup_torrent)
        p.wait("the markup torrent's file list", lambda: p.els("#add-files input[data-index]"))
        p.click("#add-start")
        p.click("#add-ok")
        row = p.wait("the markup torrent in the list", lambda: p.els("#list .row"))[0]
        p.wait("its name as text", lambda: "<img src=x onerror=" in row.text)
        row.click()
        p.click("#tab-files")
        p.wait("its file tree", lambda: "onerror" in p.text("#pane-files"))
        check(p, d.execute_script("return window.pwned === undefined && !document.querySelector('main img')"),
              "markup in a torrent name ran")
        p.click("#btn-remove")
        p.click("#remove-ok")
        p.wait("the list to be empty again", lambda: not p.els("#list .row"))

        # A .torrent dropped on the page opens the add dialog with its files.
        with open(a.torrent, "rb") as f:
            b64 = base64.b64encode(f.read()).decode()
        d.execute_script("""
            const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], 'payload.torrent', { type: 'application/x-bittorrent' }));
            for (const type of ['dragenter', 'dragover', 'drop']) {
              document.body.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
            }""", b64)
        p.wait("the add dialog with the dropped torrent's files",
               lambda: p.el("#add-dialog").is_displayed() and len(p.els("#add-files input[data-index]")) == 2)
        p.click("#add-cancel")
        check(p, rpc.torrents() == [], "a dropped torrent was added without asking")
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "409" not in e["message"]]
        check(p, not errors, f"console errors: {errors}")
        log("PASS")
    finally:
        d.quit()


# ---------------------------------------------------------------- Transmission's client

def transmission(a):
    """The same path as the built-in page's, through Transmission 3.00's web client."""
    from selenium.webdriver.common.action_chains import ActionChains
    rpc = Rpc(a.rpc)
    d = browser()
    p = Page(d, a.shots)
    try:
        d.get(f"http://127.0.0.1:{a.rpc}/")
        p.wait("Transmission's web client", lambda: p.els("#toolbar-open"))
        p.shot("transmission-main-empty")

        # A speed limit in its preferences (Speed tab): session-get follows.
        p.click("#prefs-button")
        p.wait("its preferences", lambda: p.el("#prefs-dialog").is_displayed())
        p.click("#prefs-tab-speed a")
        p.wait("the speed tab", lambda: p.el("#speed-limit-down-enabled").is_displayed())
        en = p.el("#speed-limit-down-enabled")
        if not en.is_selected():
            en.click()
        box = p.wait("the limit's box enabled", lambda: p.el("#speed-limit-down").is_enabled()
                     and p.el("#speed-limit-down"))
        # (clear() leaves a number box as it was: select its text and type over it.)
        # On a loaded machine a keystroke may miss the box (the select-all before it
        # has focus): typed again, three times at most, when the box does not read 256.
        def follows():
            s = rpc.call("session-get")["arguments"]
            return s.get("speed-limit-down") == 256 and s.get("speed-limit-down-enabled") is True
        for attempt in range(3):
            box.click()
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys("256")
            box.send_keys(Keys.TAB)
            typed, _ = p.poll(lambda: box.get_attribute("value") == "256", 5)
            if typed:
                break
            log(f"the limit's box reads {box.get_attribute('value')!r}: typed again")
        p.shot("transmission-prefs-speed")
        p.wait("session-get to follow the speed limit", follows)
        p.click("#prefs-button")

        # Add by upload, not started, so that a file can be deselected first.
        p.click("#toolbar-open")
        p.wait("its upload dialog", lambda: p.el("#torrent_upload_file").is_enabled())
        p.el("#torrent_upload_file").send_keys(a.torrent)
        start = p.els("#torrent_auto_start")
        if start and start[0].is_selected():
            start[0].click()
        p.click("#upload_confirm_button")
        p.wait("the torrent in its list", lambda: p.els(".torrent") and "payload" in p.text("#torrent_list"))
        p.wait("the daemon to have it, stopped", lambda: [t["status"] for t in rpc.torrents()] == [0])

        # Details (the inspector): its files tab, b.bin deselected.
        p.click(".torrent")
        p.click("#toolbar-inspector")
        p.wait("the inspector", lambda: p.el("#torrent_inspector").is_displayed())
        p.wait("the inspector's name", lambda: "payload" in p.text("#torrent_inspector"))
        p.shot("transmission-inspector")
        p.click("#inspector-tab-files")

        def file_row(name):
            for row in p.els("#inspector_file_list li"):
                names = row.find_elements(By.CSS_SELECTOR, ".inspector_torrent_file_list_entry_name")
                if names and names[0].text.strip() == name:
                    return row
            return None

        row = p.wait("b.bin in the files tab", lambda: file_row("b.bin"))
        row.find_element(By.CSS_SELECTOR, "input.file_wanted_control").click()
        p.wait("the daemon to skip b.bin", lambda: rpc.call("torrent-get", {"fields": ["wanted"]})
               ["arguments"]["torrents"][0]["wanted"] in ([1, 0], [True, False]))
        p.shot("transmission-files")

        # Started: it downloads from the seeder, which the peers tab shows (the limit
        # keeps it going long enough), with the tracker in the trackers tab.
        p.click(".torrent")
        p.click("#toolbar-start")
        p.wait("the daemon to start it", lambda: rpc.torrents()[0]["status"] != 0)
        p.click("#inspector-tab-peers")
        p.wait("the seeder in the peers tab", lambda: "127.0.0.1" in p.text("#inspector_peers_list"))
        p.shot("transmission-peers")
        p.click("#inspector-tab-trackers")
        p.wait("the tracker in the trackers tab", lambda: "127.0.0.1" in p.text("#inspector_trackers_list"))
        p.shot("transmission-trackers")
        p.click("#inspector-tab-info")

        a_bin = os.path.join(a.dl, "payload", "a.bin")
        b_bin = os.path.join(a.dl, "payload", "sub", "b.bin")
        p.wait("the wanted file to complete", lambda: rpc.torrents()[0]["percentDone"] == 1, timeout=90)
        p.wait("a.bin on disk, the seeder's bytes", lambda: same(a_bin, os.path.join(a.src, "a.bin")))
        check(p, not os.path.exists(b_bin), "the deselected file is on disk")
        p.wait("its list to show it seeding", lambda: "Seeding" in p.text("#torrent_list"))
        p.shot("transmission-main")

        # Stop and start.
        p.click(".torrent")
        p.click("#toolbar-pause")
        p.wait("the daemon to stop it", lambda: rpc.torrents()[0]["status"] == 0)
        p.wait("its list to show it paused", lambda: "Paused" in p.text("#torrent_list"))
        p.click("#toolbar-start")
        p.wait("the daemon to start it", lambda: rpc.torrents()[0]["status"] != 0)

        # Remove with its data, from the context menu, asked first.
        ActionChains(d).context_click(p.el(".torrent")).perform()
        item = p.wait("the context menu", lambda: [
            e for e in p.els('li[data-command="remove_data"]') if e.is_displayed()])
        item[0].click()
        p.wait("the confirmation", lambda: p.el("#dialog_confirm_button").is_displayed())
        p.click("#dialog_confirm_button")
        p.wait("the daemon to remove it", lambda: rpc.torrents() == [])
        p.wait("its data to be deleted", lambda: not os.path.exists(a_bin))
        log("PASS")
    finally:
        d.quit()


# ---------------------------------------------------------------- behind basic auth

def auth(a):
    """The page behind --rpc-auth: the browser's credentials reach the RPC too."""
    d = browser()
    p = Page(d, a.shots)
    try:
        d.get(f"http://user:secret@127.0.0.1:{a.rpc}/")
        p.wait("the page's first answer from the RPC", lambda: "torrents" in p.text("#totals"))
        p.click("#btn-settings")
        p.wait("session-get through the credentials", lambda: p.el("#settings-dialog").is_displayed())
        check(p, p.el("#set-download-dir").get_attribute("value") == a.dl, "the settings show another folder")
        check(p, p.text("#errors") == "", f"errors: {p.text('#errors')}")
        log("PASS")
    finally:
        d.quit()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["btcore", "transmission", "auth"])
    ap.add_argument("--rpc", type=int, required=True)
    ap.add_argument("--torrent", required=True)
    ap.add_argument("--bad-file")
    ap.add_argument("--markup-torrent", help="a torrent whose names hold HTML")
    ap.add_argument("--src", help="the seeder's copy of the payload")
    ap.add_argument("--dl", required=True)
    ap.add_argument("--bad-dir")
    ap.add_argument("--shots", required=True)
    ap.add_argument("--js-tests")
    a = ap.parse_args()
    {"btcore": builtin, "transmission": transmission, "auth": auth}[a.mode](a)


if __name__ == "__main__":
    main()
