#!/usr/bin/env bash
# keepwire's test command: installs what the tests need on a fresh machine, then runs every check.
# Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone builds the crate in five feature sets. Without incremental caches (useless on a
# fresh clone) and with line tables only as debug info, its target directory holds about a third
# of what it would otherwise (18 GB): a CI run that filled the disk failed in clippy.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}"
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ "${free_kib:-0}" -lt $((8 * 1024 * 1024)) ]; then
  echo "warning: $((free_kib / 1024)) MiB free here; the tests' builds need about 8 GiB (free some, e.g. cargo clean in other checkouts)" >&2
fi

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "missing: $1 — install it with: $2" >&2
    exit 1
  fi
}
need cargo "curl https://sh.rustup.rs -sSf | sh"
if ! cargo fmt --version >/dev/null 2>&1; then
  rustup component add rustfmt || { echo "missing: rustfmt — install it with: rustup component add rustfmt" >&2; exit 1; }
fi
if ! cargo clippy --version >/dev/null 2>&1; then
  rustup component add clippy || { echo "missing: clippy — install it with: rustup component add clippy" >&2; exit 1; }
fi
# ibind, the Python IBKR client that tests/interop_ibind.rs drives the emulator with (version tested: 0.2.2).
need python3 "apt-get install -y python3 python3-pip"
if ! python3 -c "import ibind" >/dev/null 2>&1; then
  python3 -m pip install --quiet ibind==0.2.2 || { echo "missing: ibind — install it with: python3 -m pip install ibind" >&2; exit 1; }
fi

# openssl, whose CLI makes the certificates of tests/certificates.rs at test time.
command -v openssl >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl; }
need openssl "apt-get install -y openssl"
# Chromium (Debian's), which renders the chaos report headless in tests/chaos.rs.
command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
need chromium "apt-get install -y chromium"

# cargo-audit checks Cargo.lock against the RustSec advisory snapshot in ../shared/advisory-db
# (offline); installed only when missing (it compiles for a few minutes).
if ! cargo audit --version >/dev/null 2>&1; then
  cargo install --locked cargo-audit || { echo "missing: cargo-audit — install it with: cargo install --locked cargo-audit" >&2; exit 1; }
fi
advisory_db="${KW_ADVISORY_DB:-../shared/advisory-db}"
if [ ! -d "$advisory_db" ]; then
  echo "missing: the RustSec advisory database at $advisory_db — clone it with: git clone https://github.com/rustsec/advisory-db $advisory_db (or set KW_ADVISORY_DB)" >&2
  exit 1
fi

echo "== cargo audit (advisories accepted, each with its reason, in .cargo/audit.toml; any other fails)"
cargo audit --db "$advisory_db" --no-fetch --stale
# protoc builds the etcd client of the `ha` feature (etcd-client's gRPC code); etcd itself is
# started by tests/ha.rs on loopback (Debian's etcd-server; version tested: 3.4.23).
command -v protoc >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y protobuf-compiler; }
need protoc "apt-get install -y protobuf-compiler"
command -v etcd >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server; }
need etcd "apt-get install -y etcd-server"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (all targets with the fault proxy of \`chaos --proxy-to\`, warnings are errors)"
cargo clippy --all-targets --locked --features proxy -- -D warnings
echo "== cargo clippy (the binary with default features: no fault proxy)"
cargo clippy --bin keepwire --locked -- -D warnings
echo "== cargo clippy (library without the emulator, as embedders build it)"
cargo clippy --lib --no-default-features --locked -- -D warnings
echo "== cargo clippy (with the ha feature, and its test-only defects)"
cargo clippy --all-targets --features ha --locked -- -D warnings
cargo clippy --all-targets --features ha,ha-test-defects --locked -- -D warnings
echo "== the quickstart example, against the emulator"
cargo run --locked --quiet --example quickstart >/dev/null
# @microsoft/signalr, the official SignalR client that tests/interop_signalr.rs drives the hub with
# (version pinned in tests/interop/signalr/package.json); installed only when absent or outdated.
need node "apt-get install -y nodejs npm"
need npm "apt-get install -y npm"
signalr_dir=tests/interop/signalr
if [ ! -f "$signalr_dir/node_modules/.package-lock.json" ] \
  || [ "$signalr_dir/package-lock.json" -nt "$signalr_dir/node_modules/.package-lock.json" ]; then
  echo "== npm ci --prefix $signalr_dir"
  npm ci --prefix "$signalr_dir" --no-audit --no-fund
fi
# Prometheus's promtool and server (Debian's package; version tested: 2.42): tests/prometheus.rs runs
# `promtool check metrics|rules`, `promtool test rules` and a real server scraping `keepwire run`.
command -v promtool >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus; }
need promtool "apt-get install -y prometheus"
need prometheus "apt-get install -y prometheus"
echo "== keepwire chaos --sim: 20 000 seeded fault schedules in the deterministic simulator"
cargo run --locked --quiet -- chaos --sim --schedules 20000 --seed "${KW_SIM_SEED:-1}"
echo "== keepwire chaos: every dialect over real sockets, seeded faults (some overlapping), invariants after each"
cargo run --locked --quiet -- chaos --dialect all --streams 6 --faults 40 --duration 60 --seed "${KW_CHAOS_SEED:-1}"
echo "== keepwire chaos --storm: 200 streams lose their sockets at once against a gateway admitting 200 upgrades/s"
cargo run --locked --quiet -- chaos --storm --streams 200
echo "== cargo test"
cargo test --locked --all-targets --features proxy
cargo test --locked --doc --features proxy
echo "== cargo test --features ha: active/standby replicas on etcd (tests/ha.rs), and its checker on a planted defect"
cargo test --locked --features ha --lib
cargo test --locked --features ha --test ha --test emulator
cargo test --locked --features ha,ha-test-defects --test ha the_checker_catches
