#!/usr/bin/env bash
# The whole test suite, from a clean clone: checks the layering and the install order, installs
# the real servers the tests start and cargo-deny (scripts/dev-stack.sh install), checks
# formatting, lints and the dependency policy (deny.toml), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Structure checks first (a second each): README commands install before they build, and no
# module imports one in its own layer or above (docs/architecture.md).
python3 scripts/check-bootstrap.py
python3 scripts/check-layers.py

scripts/dev-stack.sh install "${OFCTL_TEST_COMPONENTS:-all}"
export OFCTL_TOOLS_DIR="${OFCTL_TOOLS_DIR:-$PWD/.tools}"

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
# Supply chain (deny.toml): banned crates, licenses, crates.io as the only source. Advisories
# are left out: they need the RustSec database from the network. Duplicate versions are
# warnings; drop --hide-inclusion-graph to see which crates pull each one.
"$OFCTL_TOOLS_DIR/bin/cargo-deny" --locked check --hide-inclusion-graph bans licenses sources
cargo test --locked --all-targets
