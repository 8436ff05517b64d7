#!/usr/bin/env bash
# The scaling runs of issue 8 (item 4) and the lookup ratios (item 3), as one call on a lent
# multi-core machine that reaches no package index (docs/development.md, "Scaling runs on a
# lent machine"). Prepare here with scripts/device_wheels.sh, then run from the repository root
# there, carrying .whl and .wrk:
#
#   bash scripts/device_bench.sh            # writes the tables to $OUT (or /tmp/out)
#
# It installs the wheels into /tmp/site, then runs, printing each table as it goes:
#   1. scripts/bench_engine.py: 1 and 4 workers per model on one server and on the
#      3-master cluster, grading on and off, two repeats, then the event-to-answer latency;
#   2. scripts/bench_api.py: the lookup routes against the no-I/O route (when wrk runs);
#   3. scripts/bench_lookup_python.py: the API's Python work per lookup, then (--champion) a
#      lookup naming no model with GENDERD_DEFAULT_MODEL=best against a named one.
# Figures go with the machine's name, which each script prints. Asserts nothing about speed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
export PATH="$PWD/.wrk:$PATH" LD_LIBRARY_PATH="$PWD/.wrk${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 -c "import genderd.models.registry, genderd.bundled as s; print('genderd', genderd.__file__, s.find_binary())" || exit 1

# (ENGINE_ARGS / API_ARGS replace the benchmarks' arguments, e.g. for a short trial here)
read -ra engine <<<"${ENGINE_ARGS:---models last,top,top7d --workers-per-model 1,4 --masters 1,3 --repeat 2 --latency-seconds 10}"
read -ra api <<<"${API_ARGS:---duration 4 --repeat 2}"
python3 scripts/bench_engine.py "${engine[@]}" 2>&1 | tee "$out/engine.txt"
if { wrk --version 2>&1 || true; } | grep -q '^wrk'; then
    python3 scripts/bench_api.py "${api[@]}" 2>&1 | tee "$out/api.txt"
else
    echo "device_bench: wrk does not run here; the API table is left out" | tee "$out/api.txt"
fi
python3 scripts/bench_lookup_python.py 2>&1 | tee "$out/lookup_python.txt"
python3 scripts/bench_lookup_python.py --champion 2>&1 | tee "$out/lookup_champion.txt"
