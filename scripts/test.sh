#!/usr/bin/env bash
# The whole test suite, from a clean clone: checks the layering and the install order, installs
# the real servers the tests start (scripts/dev-stack.sh install), checks formatting and lints,
# then runs every test.
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
cargo test --locked --all-targets
