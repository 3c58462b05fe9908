#!/usr/bin/env bash
# The one command for a lent GPU machine (issue 15): the tests marked `gpu` and the end-to-end
# image benchmark, one JSON + one log in $OUT, within 8 minutes.
#
#   bash benchmarks/gpu_check.sh --prepare   # on the dev machine, once: the device wheels and the
#                                            # Flickr8k photos into the ignored .whl/ (about 5 MiB)
#   bash benchmarks/gpu_check.sh             # on the device (run tool: carry [".whl"], timeout_s 560)
#
# The device image has torch/torchvision but not open_clip_torch, ftfy, wcwidth: when open_clip is
# missing, the wheels in .whl/ are installed into .site/ (no index, no deps) and whitenclip runs
# from the tree (PYTHONPATH=.site:.). Without CUDA this is a dry run: the same steps at toy sizes
# on the CPU (gpu tests collected and skipped, a 32-file benchmark with a tiny model), in seconds,
# with the packages the device image lacks made unimportable (benchmarks/device_like.py).
#
# Writes $OUT/gpu_check.json (device, test counts and failures, benchmark figures, timings) and
# $OUT/gpu_check.log (everything printed). Exit 0 when the tests passed and the benchmark ran.
# GPU_CHECK_BUDGET (seconds, default 480) bounds the whole run; PYTHON picks the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-480}
OUT=${OUT:-$PWD/out/gpu-check}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
log() { echo "gpu_check: $*" | tee -a "$LOG" >&2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p .whl/flickr8k-images
    cp ../shared/device-wheels/*.whl .whl/ || exit 1
    cp ../shared/datasets/flickr8k/images/*.jpg .whl/flickr8k-images/ 2>/dev/null ||
        echo "gpu_check: no Flickr8k photos here; the device benchmark will re-encode data/images" >&2
    git check-ignore -q .whl || echo "/.whl/" >>.git/info/exclude
    du -sh .whl
    exit 0
fi

: >"$LOG"
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SETUP=ok
RUN=()
if ! "$PY" -c "import open_clip" >/dev/null 2>&1; then
    if ls .whl/*.whl >/dev/null 2>&1 &&
        "$PY" -m pip install -q --no-index --no-deps --no-compile --target .site .whl/*.whl >>"$LOG" 2>&1; then
        export PYTHONPATH=".site:$PYTHONPATH"
        log "installed $(ls .whl/*.whl | wc -l) wheels from .whl/ into .site/"
    else
        SETUP="open_clip missing and the wheels in .whl/ could not be installed (run --prepare, carry .whl)"
    fi
fi
"$PY" -c "import open_clip, whitenclip.encoders" >>"$LOG" 2>&1 || SETUP=${SETUP/ok/whitenclip.encoders does not import}
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>>"$LOG" || echo 0)
NPROC=$(nproc 2>/dev/null || echo 2)
WORKERS=$((NPROC < 16 ? NPROC : 16))
if [ "$CUDA" = 1 ]; then
    MODE=device
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$LOG" 2>&1 || true
    BENCH_ARGS=(--peer-workers "$WORKERS")
    TEST_LIMIT=240
else
    MODE=dry-run
    log "no CUDA device: dry run on the CPU at toy sizes (gpu tests collected and skipped)"
    if ls .whl/*.whl >/dev/null 2>&1; then  # the device's install step, into a throwaway folder
        rm -rf "$OUT/site-dry-run"
        if "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$OUT/site-dry-run" .whl/*.whl >>"$LOG" 2>&1 &&
            PYTHONPATH="$OUT/site-dry-run" "$PY" -S -c "import sys; sys.path.insert(0, '$OUT/site-dry-run'); import ftfy, wcwidth" >>"$LOG" 2>&1; then
            log "the wheels in .whl/ install and import (checked in $OUT/site-dry-run)"
        else
            SETUP="the wheels in .whl/ do not install"
        fi
        rm -rf "$OUT/site-dry-run"
    else
        log "no wheels in .whl/ yet: run 'bash benchmarks/gpu_check.sh --prepare' before the device run"
    fi
    BENCH_ARGS=(--device cpu --e2e-files 32 --e2e-archs wc-small --e2e-precisions fp32,bf16 --e2e-batch 16
        --peer-workers 2 --e2e-variants)
    TEST_LIMIT=120
    RUN=(benchmarks/device_like.py)  # what the device image lacks (hypothesis, pyarrow, ...) cannot be imported
fi
log "mode $MODE, python $PY, $NPROC CPUs, budget ${BUDGET}s, setup: $SETUP"

TESTS_RC=-1
if [ "$SETUP" = ok ]; then
    T=$(($(left) - 150 < TEST_LIMIT ? $(left) - 150 : TEST_LIMIT))
    log "gpu tests (limit ${T}s)"
    timeout "$T" "$PY" "${RUN[@]}" -m pytest -q -p no:cacheprovider -m gpu -rA tests/test_decode.py \
        --junitxml "$OUT/gpu_tests.xml" -o junit_logging=system-out >>"$LOG" 2>&1
    TESTS_RC=$?
    log "gpu tests exit $TESTS_RC after $(($(date +%s) - START))s"
fi

BENCH_RC=-1
if [ "$SETUP" = ok ]; then
    T=$(($(left) - 15))
    log "end-to-end benchmark (limit ${T}s)"
    timeout "$T" "$PY" "${RUN[@]}" benchmarks/bench_encode.py --e2e --skip-text --skip-images "${BENCH_ARGS[@]}" \
        --json "$OUT/bench_e2e.json" >>"$LOG" 2>&1
    BENCH_RC=$?
    log "benchmark exit $BENCH_RC after $(($(date +%s) - START))s"
fi

"$PY" - "$OUT" "$MODE" "$SETUP" "$TESTS_RC" "$BENCH_RC" "$(($(date +%s) - START))" <<'EOF' 2>>"$LOG" | tee -a "$LOG"
import json, platform, subprocess, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, mode, setup, tests_rc, bench_rc, seconds = sys.argv[1:]
res = {"mode": mode, "dry_run": mode != "device", "setup": setup, "seconds": int(seconds),
       "tests_exit": int(tests_rc), "bench_exit": int(bench_rc), "python": platform.python_version()}
try:
    import torch
    res["torch"] = torch.__version__
    res["cuda"] = torch.version.cuda
    res["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import torchvision
    res["torchvision"] = torchvision.__version__
except Exception as exc:  # noqa: BLE001
    res["torch_error"] = str(exc)
junit = Path(out, "gpu_tests.xml")
if junit.is_file():
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    res["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    res["tests"]["failed"] = [f"{c.get('name')}: {(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
                              for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
    res["tests"]["printed"] = {c.get("name"): [ln for ln in (c.findtext("system-out") or "").splitlines()
                                               if ln.strip() and not ln.startswith("---")][:10]
                               for c in suite.iter("testcase") if c.find("skipped") is None}
bench = Path(out, "bench_e2e.json")
if bench.is_file():
    res["bench"] = json.loads(bench.read_text())
tests_ok = int(tests_rc) == 0 or (mode != "device" and int(tests_rc) == 5)  # 5: nothing ran (all skipped)
res["ok"] = setup == "ok" and tests_ok and int(bench_rc) == 0 and "bench" in res
Path(out, "gpu_check.json").write_text(json.dumps(res, indent=1) + "\n")
print(f"gpu_check: {'OK' if res['ok'] else 'FAILED'} ({mode}); {json.dumps(res.get('tests', {}).get('failed', []))[:400]}")
for row in res.get("bench", {}).get("summary", []):
    print("gpu_check:", json.dumps(row))
sys.exit(0 if res["ok"] else 1)
EOF
RC=${PIPESTATUS[0]}
log "wrote $OUT/gpu_check.json and $OUT/gpu_check.log in $(($(date +%s) - START))s (exit $RC)"
exit $RC
