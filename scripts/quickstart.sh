#!/usr/bin/env bash
# The main job on the embedded default: start the local stack (real NATS, Redis, MongoDB-wire
# server, Kafka-wire broker, and ofctl's sandbox emulators), then plan and apply the
# platform's desired state to it, and show that a second plan has nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

# Install first: the build compiles librdkafka, which needs cmake, make and g++ (dev-stack
# installs them with the servers). scripts/check-bootstrap.py keeps this order in CI.
# cargo-deny (for scripts/test.sh) is skipped: it takes minutes to compile.
OFCTL_NO_CARGO_DENY=1 scripts/dev-stack.sh install kafka
cargo build --release --locked
export OFCTL_BIN="$PWD/target/release/ofctl"
scripts/dev-stack.sh down --purge >/dev/null 2>&1 || true
scripts/dev-stack.sh up --with-kafka
eval "$(scripts/dev-stack.sh env)"

set +e
"$OFCTL_BIN" plan -f desired-state
code=$?
set -e
[ "$code" -eq 1 ] && exit 1
"$OFCTL_BIN" apply -f desired-state --auto-approve
"$OFCTL_BIN" plan -f desired-state
echo "The stack is still running: 'scripts/dev-stack.sh env' prints its endpoints, 'scripts/dev-stack.sh down' stops it."
echo "Shell completion: 'mkdir -p ~/.local/share/bash-completion/completions && $OFCTL_BIN completions bash > ~/.local/share/bash-completion/completions/ofctl' (zsh, fish and man pages: README, 'Shell completions, man pages, logs and colour')."
