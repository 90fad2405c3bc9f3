#!/usr/bin/env bash
# The main job (README, "Quick start"): installs what it needs, builds
# everything, boots Debian's kernel with LIO and replipipe.ko under QEMU and
# runs tests/vm/demo/demo.sh in it: a replication pipe created through the
# CLI, writes through a LIO LUN, both legs identical.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${REPLIPIPE_BUILD_DIR:-$repo/build}

"$repo/tools/setup-deps.sh"
cmake -S "$repo" -B "$build" >/dev/null
cmake --build "$build" -j "$(nproc)"
REPLIPIPE_BUILD_DIR=$build "$repo/tests/vm/run-scenario.sh" "$repo/tests/vm/demo/demo.sh"
