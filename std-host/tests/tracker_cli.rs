//! `btcore tracker`, `share`, `download` and `scrape` together, as a publisher on a NAS
//! would use them: the tracker counts the seeder and the leecher, the leecher gets the
//! data through it, and its `stopped` announce on exit is counted; over HTTP and over
//! UDP (where every announce, `stopped` included, runs on the client's event loop).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn btcore() -> Command {
    Command::new(env!("CARGO_BIN_EXE_btcore"))
}

fn scrape(torrent: &std::path::Path) -> String {
    let out = btcore()
        .args(["scrape", torrent.to_str().expect("utf-8"), "--timeout", "5"])
        .output()
        .expect("scrape");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn share_download_scrape_through_our_tracker() {
    share_download_scrape("http");
}

#[test]
fn share_download_scrape_through_our_udp_tracker() {
    share_download_scrape("udp");
}

fn share_download_scrape(scheme: &str) {
    let dir = std::env::temp_dir().join(format!(
        "btcore-tracker-cli-{scheme}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).expect("dir");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("src/data.bin"), &data).expect("write");
    let tp = port();
    let announce = format!("{scheme}://127.0.0.1:{tp}/announce");
    let _tracker = Kill(
        btcore()
            .args([
                "tracker",
                "--http",
                &format!("127.0.0.1:{tp}"),
                "--udp",
                &format!("127.0.0.1:{tp}"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("tracker"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let sp = port();
    let share = Kill(
        btcore()
            .current_dir(&dir)
            .args([
                "share",
                "src/data.bin",
                "-t",
                &announce,
                "--bind",
                "127.0.0.1",
                "--progress",
                "none",
            ])
            .args(["--port", &sp.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("share"),
    );
    let torrent = dir.join("data.bin.torrent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !torrent.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(torrent.exists(), "share wrote no torrent");
    // The seeder's announce reaches the tracker.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scrape(&torrent).contains("seeders 1") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        scrape(&torrent).contains("seeders 1"),
        "{}",
        scrape(&torrent)
    );
    let out = dir.join("out");
    let status = btcore()
        .args([
            "download",
            torrent.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
        ])
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port().to_string(),
            "--progress",
            "none",
            "--timeout",
            "30",
        ])
        .status()
        .expect("download");
    assert!(status.success(), "download: {status}");
    assert_eq!(std::fs::read(out.join("data.bin")).expect("data"), data);
    // Completed once, and the leecher's `stopped` leaves one seeder.
    let s = scrape(&torrent);
    assert!(s.contains("seeders 1") && s.contains("downloaded 1"), "{s}");
    drop(share);
    let _ = std::fs::remove_dir_all(&dir);
}
