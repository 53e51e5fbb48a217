#!/usr/bin/env bash
# Every check btcore's CI runs, in one command, on a fresh machine:
#   bash scripts/test-all.sh
# It installs what it needs (rustup targets and components, cargo-fuzz, cargo-nextest),
# then runs: format check, clippy with warnings denied, the no_std build for
# thumbv7em-none-eabihf (no allocator), doc tests, short fuzz runs of every target,
# and last the whole test suite (so its summary is the last thing printed).
# FUZZ_SECONDS (default 20) sets the length of each fuzz run; SKIP_FUZZ=1 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
rustup target list --installed | grep -q '^thumbv7em-none-eabihf$' || rustup target add thumbv7em-none-eabihf
command -v cargo-nextest >/dev/null || cargo install cargo-nextest --locked
if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fi
cargo --version

step "format"
cargo fmt --all -- --check

step "clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "core for thumbv7em-none-eabihf, no allocator"
cargo build -p btcore-core --no-default-features --target thumbv7em-none-eabihf --locked
step "core for thumbv7em-none-eabihf, with alloc"
cargo build -p btcore-core --features alloc --target thumbv7em-none-eabihf --locked

step "doc tests"
cargo test --workspace --doc --locked

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    step "fuzz smoke runs (${FUZZ_SECONDS:-20} s per target)"
    bash fuzz/smoke.sh
fi

step "tests"
cargo nextest run --workspace --locked --no-fail-fast
