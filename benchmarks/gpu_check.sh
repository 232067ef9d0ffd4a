#!/usr/bin/env bash
# The GPU node's figures of issue 24 (benchmarks/gpu_check.py), each phase written as JSON under
# OUT as soon as it is measured, in under 5 minutes. It runs the node's own python3 and CUDA torch
# and fetches nothing. The one package galaxymorph's classify path needs that the node's image
# lacks, simplejpeg, travels as a wheel in .whl/ (prepared here, where pip reaches PyPI):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl simplejpeg==1.9.0
# then on the node (the device tool, carrying .whl): bash benchmarks/gpu_check.sh "$OUT"
set -euo pipefail
out=${1:-gpu_check}
here=$(cd "$(dirname "$0")/.." && pwd)
site=/tmp/galaxymorph-site
if compgen -G "$here/.whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$here"/.whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$here/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
cd "$here"
timeout 290 python3 benchmarks/gpu_check.py --out "$out" "${@:2}"
