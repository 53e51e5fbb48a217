//! The `btcore` command.
//!
//! Exit codes: 0 success; 2 bad command line; 3 the input (torrent file or magnet link)
//! is invalid; 4 a file could not be read.

use btcore_core::magnet::Magnet;
use btcore_core::metainfo::{Limits, Metainfo};
use btcore_host::{info, read_torrent_file};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// btcore: an embeddable BitTorrent engine.
#[derive(Parser, Debug)]
#[command(name = "btcore", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what a .torrent file holds: name, info-hash, sizes, trackers, files.
    Info {
        /// The .torrent file.
        file: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Parse a magnet link (BEP 9) and show what it names.
    Magnet {
        /// The magnet URI (quote it in the shell).
        uri: String,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

const EXIT_INVALID: u8 = 3;
const EXIT_IO: u8 = 4;

fn fail(code: u8, msg: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("btcore: {msg}");
    ExitCode::from(code)
}

fn info_cmd(file: &Path, json: bool) -> ExitCode {
    let shown = file.display();
    let bytes = match read_torrent_file(file) {
        Ok(b) => b,
        Err(e) => return fail(EXIT_IO, format_args!("{shown}: {e}")),
    };
    let mut tokens = Vec::new();
    let m = match Metainfo::parse_vec(&bytes, &mut tokens, &Limits::default()) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_INVALID, format_args!("{shown}: {e}")),
    };
    let out = if json {
        info::torrent_json(&m).map(|v| v.to_string())
    } else {
        info::torrent_text(&m, &shown.to_string())
    };
    match out {
        Ok(s) => {
            println!("{}", s.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => fail(EXIT_INVALID, format_args!("{shown}: {e}")),
    }
}

fn magnet_cmd(uri: &str, json: bool) -> ExitCode {
    let m = match Magnet::parse_str(uri) {
        Ok(m) => m,
        Err(e) => return fail(EXIT_INVALID, format_args!("magnet link: {e}")),
    };
    let v = info::magnet_json(&m);
    if json {
        println!("{v}");
    } else {
        println!("Hash: {}", m.info_hash());
        if let Some(n) = v["name"].as_str() {
            println!("Name: {n}");
        }
        for (label, key) in [
            ("Tracker", "trackers"),
            ("Web seed", "web_seeds"),
            ("Peer", "peers"),
        ] {
            for t in v[key].as_array().into_iter().flatten() {
                println!("{label}: {}", t.as_str().unwrap_or_default());
            }
        }
        if m.is_truncated() {
            println!("(more entries than btcore keeps were dropped)");
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Info { file, json } => info_cmd(file, *json),
        Command::Magnet { uri, json } => magnet_cmd(uri, *json),
    }
}
