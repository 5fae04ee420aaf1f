#!/usr/bin/env bash
# attnbench's GPU measurement path, first look on one H200, in one run of <= ~8 min.
# Run from the repository root of a copy of the working tree on the GPU machine, with the wheels
# that make_wheels.sh put in wheelhouse-gpu/ (this script is copied there too):
#   bash wheelhouse-gpu/run_on_gpu.sh          (wheelhouse-gpu/ copied along with the tree; allow ~540 s)
# A rerun on a still-warm machine with less time left: BUDGET_S=240 bash wheelhouse-gpu/run_on_gpu.sh
# Steps, most important first; each is time-boxed, and a step is skipped when the whole budget
# (BUDGET_S, default 470 s) could not hold it:
#   env + install, nvidia-smi, raw NVML/CUDA probe (counter step and lag, instant vs 1 s average
#   power, SM clock and clocks-event reasons after the load stops, violation counters, SDPA
#   backend), attnbench-doctor (with its power-sensor pulse test), the nine mechanisms at 1024² (paper_4l, bf16, batch 4, infer) as a
#   sweep, softmax 4096² (OOM), softmax 2048²,4096² as a sweep (OOM then skipped_oom), linear_infsa
#   9216², sdpa 4096² (to scale sdpa's big cells), four mechanisms trained at 1024², sdpa's
#   FlashAttention backward past 2^31 elements (error, or ok) and a cell after it (recovery).
# Writes 7 flat files to $OUT: log.txt, env.txt, nvidia-smi.txt, probe.json, doctor.txt,
# summary.txt, runs.tar.gz (every row, traceback, doctor.json, report). Prints the summary last.
set -u -o pipefail
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-470}
DEADLINE=$((T0 + BUDGET_S))
REPO=$(pwd)
WHEELS=${WHEELS:-$REPO/wheelhouse-gpu}
OUT=${OUT:-/tmp/gpu_check_out}
W=/tmp/gpucheck
PY=python3
export REPO WHEELS OUT W PY PYTHONUNBUFFERED=1
rm -rf "$W" && mkdir -p "$OUT" "$W/runs"

step() { # step NAME MIN_S CAP_S COMMAND...: skipped with less than MIN_S left, killed after CAP_S
  local name=$1 min=$2 cap=$3
  shift 3
  local now left t s rc
  now=$(date +%s)
  left=$((DEADLINE - now - 10))
  if [ "$left" -lt "$min" ]; then
    echo "=== SKIP $name: ${left}s of the budget left, it needs ${min}s"
    echo "$name skipped (budget)" >>"$W/steps.txt"
    return 0
  fi
  t=$((cap < left ? cap : left))
  echo "=== $name (up to ${t}s) at +$((now - T0))s"
  s=$(date +%s)
  timeout -k 10 "$t" "$@"
  rc=$?
  echo "=== $name: rc=$rc after $(($(date +%s) - s))s$([ "$rc" = 124 ] && echo ' (TIMED OUT)')"
  echo "$name rc=$rc $(($(date +%s) - s))s" >>"$W/steps.txt"
}

write_helpers() {
  # One attnbench cell as a single run (paper_4l, bf16, batch 4 unless overridden).
  cat >"$W/cell.sh" <<'EOF'
name=$1; shift
cd "$W" && exec "$PY" -m harness hydra.mode=RUN sweep=paper "$@" hydra.run.dir="$W/runs/$name"
EOF
  # A sweep (multirun) under the paper preset; the overrides narrow its grid.
  cat >"$W/sweep.sh" <<'EOF'
name=$1; shift
cd "$W" && exec "$PY" -m harness sweep=paper sweep_name="check_$name" "$@" hydra.sweep.dir="$W/runs/$name"
EOF
  cat >"$W/probe.py" <<'EOF'
"""What the harness assumes of NVML and CUDA here, measured raw (no attnbench code)."""
import json, os, statistics, threading, time
import pynvml as nv
import torch

out = {"torch": torch.__version__, "cuda": torch.version.cuda, "pid": os.getpid()}
nv.nvmlInit()
h = nv.nvmlDeviceGetHandleByIndex(0)
INST = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", 186)


def safe(fn):
    try:
        return fn()
    except Exception as e:  # noqa: BLE001
        return f"ERR {type(e).__name__}: {e}"


def inst():
    f = nv.nvmlDeviceGetFieldValues(h, [INST])[0]
    return f.value.uiVal / 1e3 if f.nvmlReturn == 0 else None


def reasons():
    try:
        return int(nv.nvmlDeviceGetCurrentClocksEventReasons(h))
    except Exception:  # noqa: BLE001
        return int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))


def viol():
    return {k: safe(lambda p=p: int(nv.nvmlDeviceGetViolationStatus(h, p).violationTime))
            for k, p in (("power", 0), ("thermal", 1))}


out["driver"] = safe(nv.nvmlSystemGetDriverVersion)
out["name"] = safe(lambda: nv.nvmlDeviceGetName(h))
out["gpus_nvml"] = safe(nv.nvmlDeviceGetCount)
out["persistence"] = safe(lambda: nv.nvmlDeviceGetPersistenceMode(h))
out["power_limit_w"] = safe(lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1e3)
out["call_ms"] = {}
for name, fn in (("counter", lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h)), ("instant", inst),
                 ("power_usage", lambda: nv.nvmlDeviceGetPowerUsage(h)),
                 ("sm_clock", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
                 ("reasons", reasons), ("procs", lambda: nv.nvmlDeviceGetComputeRunningProcesses(h))):
    t, n, err = time.perf_counter(), 0, None
    while time.perf_counter() - t < 0.2:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            err = repr(e)
            break
        n += 1
    out["call_ms"][name] = [round((time.perf_counter() - t) / max(n, 1) * 1e3, 3), err]

trace, stop = [], threading.Event()


def sample():  # every reading through safe(): a failing one is a string, never a dead thread
    while not stop.is_set():
        trace.append((time.perf_counter(), safe(lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h)),
                      safe(inst), safe(lambda: nv.nvmlDeviceGetPowerUsage(h) / 1e3),
                      safe(lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)), safe(reasons)))
        time.sleep(0.002)


th = threading.Thread(target=sample, daemon=True)
th.start()
m = {"start": time.perf_counter()}
time.sleep(1.0)
out["procs_before_ctx"] = safe(lambda: [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h)])
m["ctx"] = time.perf_counter()
torch.empty(1, device="cuda")
m["ctx_done"] = time.perf_counter()
out["procs_after_ctx"] = safe(lambda: [p.pid for p in nv.nvmlDeviceGetComputeRunningProcesses(h)])
out["mem_free_total_gib"] = [x / 2**30 for x in torch.cuda.mem_get_info()]
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn_like(a)
torch.cuda.synchronize()
time.sleep(1.0)
v0 = viol()
m["load"] = time.perf_counter()
n = 0
while time.perf_counter() - m["load"] < 3.0:
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    n += 20
m["load_end"] = time.perf_counter()
v1 = viol()
time.sleep(1.5)
stop.set()
th.join()
out["matmul_tflops"] = round(n * 2 * 8192**3 / (m["load_end"] - m["load"]) / 1e12, 1)
out["violation_ns_during_3s_load"] = {
    k: v1[k] - v0[k] if isinstance(v0[k], int) and isinstance(v1[k], int) else [v0[k], v1[k]]
    for k in v0}
out["context_s"] = round(m["ctx_done"] - m["ctx"], 3)

def analyse(trace, m, out):
    """Counter steps, power sources, lag, and the clocks after the load (pure Python)."""
    # The counter's steps: period at idle and under load; power per step against the instant field.
    steps = [(t, c) for (t, c, *_), (_, c0, *_) in zip(trace[1:], trace)
             if isinstance(c, int) and isinstance(c0, int) and c != c0]
    out["trace_samples"] = len(trace)
    gaps = [(t1, t1 - t0, (c1 - c0) / 1e3 / (t1 - t0)) for (t0, c0), (t1, c1) in zip(steps, steps[1:])]
    idle_g = [g for t, g, _ in gaps if t < m["ctx"]]
    load_g = [g for t, g, _ in gaps if m["load"] + 0.5 < t < m["load_end"]]
    out["counter_step_ms"] = {"idle": round(statistics.median(idle_g) * 1e3, 1) if idle_g else None,
                              "load": round(statistics.median(load_g) * 1e3, 1) if load_g else None}


    def mean_inst(t0, t1):
        xs = [p for t, _, p, *_ in trace if t0 <= t <= t1 and isinstance(p, float)]
        return statistics.mean(xs) if xs else None


    def mean_avg(t0, t1):
        xs = [p for t, _, _, p, *_ in trace if t0 <= t <= t1 and isinstance(p, float)]
        return statistics.mean(xs) if xs else None


    idle_w = mean_inst(m["start"], m["ctx"])
    load_w = mean_inst(m["load"] + 0.5, m["load_end"])
    out["power_w"] = {"idle_instant": idle_w, "load_instant": load_w,
                      "load_1s_average_field": mean_avg(m["load"] + 0.5, m["load_end"]),
                      "load_counter": statistics.mean([p for t, _, p in gaps
                                                       if m["load"] + 0.5 < t < m["load_end"]] or [0])}
    # Energy over the load, counter (step to step) against the instant power integrated over the same span.
    s0 = next((s for s in steps if s[0] > m["load"]), None)
    s1 = next((s for s in steps if s[0] > m["load_end"]), None)
    if s0 and s1:
        pts = [(t, p) for t, _, p, *_ in trace if s0[0] <= t <= s1[0] and isinstance(p, float)]
        integral = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(pts, pts[1:]))
        out["load_energy_j"] = {"counter": (s1[1] - s0[1]) / 1e3, "instant_integral": integral,
                                "ratio": (s1[1] - s0[1]) / 1e3 / integral if integral else None}
    # Lag: when each signal crosses half-way between idle and load, after the load starts and stops.
    if idle_w and load_w:
        mid = (idle_w + load_w) / 2
        def first(series, after, rising):
            for t, p in series:
                if t > after and p is not None and ((p > mid) if rising else (p < mid)):
                    return round((t - after) * 1e3, 1)
            return None
        inst_s = [(t, p if isinstance(p, float) else None) for t, _, p, *_ in trace]
        cnt_s = [(t, p) for t, _, p in gaps]
        avg_s = [(t, p if isinstance(p, float) else None) for t, _, _, p, *_ in trace]
        out["crossing_ms_after"] = {
            "load_start": {"instant": first(inst_s, m["load"], True),
                           "counter": first(cnt_s, m["load"], True),
                           "avg_1s": first(avg_s, m["load"], True)},
            "load_end": {"instant": first(inst_s, m["load_end"], False),
                         "counter": first(cnt_s, m["load_end"], False),
                         "avg_1s": first(avg_s, m["load_end"], False)}}
    # What attnbench's end-of-window clock check would read: SM clock and reasons after the load.
    load_sm = [s for t, *_, s, r in trace if m["load"] + 0.5 < t < m["load_end"] and isinstance(s, int)]
    sm_load = statistics.median(load_sm) if load_sm else None
    after = [(round((t - m["load_end"]) * 1e3), s, r) for t, *_, s, r in trace
             if m["load_end"] <= t <= m["load_end"] + 1.0]
    out["sm_clock_load_mhz"] = sm_load
    out["sm_below_90pct_ms_after_end"] = next(
        (dt for dt, s, _ in after if sm_load and isinstance(s, int) and s < 0.9 * sm_load), None)
    out["reasons_during_load"] = sorted({hex(r) for t, *_, r in trace
                                         if m["load"] < t < m["load_end"] and isinstance(r, int)})
    out["reasons_1s_after_end"] = sorted({hex(r) for _, _, r in after if isinstance(r, int)})
    out["after_end_every_50ms"] = [(dt, s, hex(r) if isinstance(r, int) else r)
                                   for i, (dt, s, r) in enumerate(after) if i % 25 == 0][:20]


try:
    analyse(trace, m, out)
except Exception as e:  # noqa: BLE001  (keep what was measured)
    out["analysis_error"] = repr(e)
del a, b
torch.cuda.empty_cache()

# Which SDPA kernel the paper_4l shapes get (q, k, v as the model makes them: views of qkv).
try:
    from torch.nn.attention import SDPBackend
except ImportError:
    SDPBackend = None


def choice(tokens, grad):
    qkv = torch.empty(4, tokens, 3, 64, 16, device="cuda", dtype=torch.bfloat16,
                      requires_grad=grad)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    c = torch._fused_sdp_choice(q, k, v)
    return SDPBackend(c).name if SDPBackend is not None else c


out["sdpa_backend"] = {f"{n} tokens, grad={g}": safe(lambda n=n, g=g: choice(n, g))
                       for n in (4096, 331776) for g in (False, True)}
json.dump(out, open(os.environ["OUT"] + "/probe.json", "w"), indent=1, default=str)
short = {k: v for k, v in out.items() if k not in ("after_end_every_50ms",)}
print("PROBE", json.dumps(short, default=str))
print("PROBE after the load stops (ms, SM MHz, reasons):", out["after_end_every_50ms"])
EOF
  cat >"$W/summary.py" <<'EOF'
"""Every row the check wrote, one line each, and what they say about the paper sweep's length."""
import json, os, statistics
from pathlib import Path

W = Path(os.environ["W"])
rows = []
for p in sorted((W / "runs").rglob("result.json")):
    r = json.loads(p.read_text())
    r["_run"] = p.relative_to(W / "runs").parts[0]
    rows.append(r)


def f(v, spec=".3g"):
    return "-" if v is None else format(v, spec)


lines = [f"{len(rows)} rows (run attention res mode status | img/s lat_ms[p10-p90] iters win_s | "
         "J/img counter, sampled/counter, idle-subtracted J/img, res, valid | W avg, W idle | "
         "peak GiB | timing_valid | harness_s)"]
for r in rows:
    images = (r.get("iters") or 0) * (r.get("batch_size") or 1)
    e, s = r.get("energy_j_per_img"), r.get("sampled_energy_j_per_img")
    dyn = None
    if e is not None and r.get("idle_power_w") is not None and r.get("window_s") and images:
        dyn = e - r["idle_power_w"] * r["window_s"] / images
    lines.append(
        f"{r['_run']:<22} {r['attention']:<12} {r['resolution']:>5} {r['mode']:<5} {r['status']:<11}| "
        f"{f(r.get('throughput_img_s'))} {f(r.get('latency_ms'))}[{f(r.get('latency_ms_p10'))}-"
        f"{f(r.get('latency_ms_p90'))}] {r.get('iters') or '-'} {f(r.get('window_s'))} | "
        f"{f(e)} {f(s / e if e and s else None)} {f(dyn)} {f(r.get('energy_resolution'), '.2%') if r.get('energy_resolution') is not None else '-'} "
        f"{r.get('energy_valid')} | {f(r.get('avg_power_w'))} {f(r.get('idle_power_w'))} | "
        f"{f((r.get('peak_mem_bytes') or 0) / 2**30) if r.get('peak_mem_bytes') else '-'} | "
        f"{r.get('timing_valid')} | {f(r.get('harness_s'))}")
    for key in ("timing_note", "energy_note", "energy_source", "error"):
        if r.get(key):
            lines.append(f"    {key}: {str(r[key])[:300]}")
# Paper sweep length, scaled from these cells: fast cells cost about the median harness_s of the
# 1024² sweep; sdpa's big cells are 6 steps (2 warm-up, 1 estimate, 3 timed) at N^2 scaling.
fast = [r["harness_s"] for r in rows if r["_run"].startswith("A_") and r["status"] == "ok"]
sd = next((r for r in rows if r["_run"].startswith("S3_") and r["status"] == "ok"), None)
if fast:
    per = statistics.median(fast)
    est = 124 * per + 20 * 2.0  # ~124 measured cells, ~20 skipped_oom cells (counts only)
    text = f"paper sweep: ~{per:.1f} s per ordinary cell"
    if sd:
        t = sd["latency_ms"] / 1e3
        big = {r: 6 * t * ((r // 16) ** 2 / 65536) ** 2 for r in (6144, 8192, 9216)}
        train = 3 * (6 * t + big[6144])  # train 4096, 6144 at ~3x a forward; 8192 train OOMs
        est += sd["harness_s"] + sum(big.values()) + train
        text += (f"; sdpa 4096² step {t:.2f} s -> infer 6144/8192/9216 cells ~"
                 + "/".join(f"{v / 60:.1f}" for v in big.values()) + f" min, train ~{train / 60:.1f} min")
    lines.append(text + f"; total ~{est / 60:.0f} min on this GPU")
steps = (W / "steps.txt").read_text() if (W / "steps.txt").exists() else ""
lines.append("steps: " + "; ".join(steps.strip().splitlines()))
text = "\n".join(lines)
(Path(os.environ["OUT"]) / "summary.txt").write_text(text + "\n")
print(text)
EOF
}

install() {
  # The wheels into one folder on the path; the checkout's own harness comes first on PYTHONPATH,
  # so conf/ and git provenance are the checkout's (an installed attnbench cannot find conf/).
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$W/site" "$WHEELS"/*.whl || return 1
  if [ ! -e "$W/site/hydra_plugins/attnbench_sweeper/__init__.py" ]; then
    mkdir -p "$W/site/hydra_plugins"
    ln -sfn "$REPO/harness/running/hydra_plugin" "$W/site/hydra_plugins/attnbench_sweeper"
  fi
}

main() {
  set -x
  write_helpers
  export PYTHONPATH="$REPO:$W/site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$W/site/bin:$PATH"
  timeout 120 bash -c "$(declare -f install); install" || echo "INSTALL FAILED: later steps will fail"
  {
    date -u
    uname -a
    nproc
    free -g
    "$PY" -V
    "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|numpy|scipy|pandas|seaborn|matplotlib|nvidia-ml-py|hydra|omegaconf|antlr4|fvcore|iopath|yacs|termcolor|portalocker|tabulate|tqdm|pillow|pyyaml) '
    "$PY" -c 'import hydra, omegaconf, fvcore, iopath, antlr4, scipy, hydra_plugins.attnbench_sweeper as s, harness, attention_zoo as z; print("imports ok:", hydra.__version__, omegaconf.__version__, harness.__file__, s.__file__, z.available())'
    env | grep -E '^(CUDA|NVIDIA|PYTORCH|OMP)' || true
  } >"$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"

  step nvidia-smi 5 30 bash -c 'nvidia-smi -q >"$OUT/nvidia-smi.txt" 2>&1;
    nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,driver_version,persistence_mode,pstate,compute_mode,mig.mode.current,power.draw,power.limit,power.default_limit,clocks.sm,clocks.max.sm,clocks.mem,temperature.gpu,memory.used,memory.total --format=csv;
    nvidia-smi -q -d PERFORMANCE,POWER | grep -v "^$" | head -60; nvidia-smi'
  step probe 20 60 "$PY" "$W/probe.py"
  step doctor 20 90 bash -c 'cd "$W" && "$PY" -m harness.reporting.doctor --power-test --json "$W/doctor.json" >"$OUT/doctor.txt" 2>&1; rc=$?; cat "$OUT/doctor.txt"; exit $rc'
  # The nine mechanisms at 1024², inference: the paper sweep's headline slice, forked from the
  # fork server with CUDA first made in each cell.
  step A_1024_infer 60 220 bash "$W/sweep.sh" A_1024_infer mode=infer resolution=1024
  # A 2 TiB score matrix: `oom` with the allocation failure as evidence, and a clean exit.
  step S1_softmax_4096 20 60 bash "$W/cell.sh" S1_softmax_4096 attention=softmax resolution=4096 mode=infer
  # The skip: 2048² runs out of memory (two 128 GiB score tensors), so 4096² is skipped_oom.
  step B_softmax_skip 30 100 bash "$W/sweep.sh" B_softmax_skip attention=softmax mode=infer resolution=2048,4096
  # The train path (autocast bf16, AdamW) has never run on a GPU: four mechanisms at 1024²
  # (softmax is expected to run out of memory there: ~26 GB of saved scores per block).
  step T_1024_train 40 120 bash "$W/sweep.sh" T_1024_train mode=train resolution=1024 attention=softmax,sdpa,linear_infsa,swin
  step S2_linear_infsa_9216 20 70 bash "$W/cell.sh" S2_linear_infsa_9216 attention=linear_infsa resolution=9216 mode=infer
  # One step of sdpa at 65,536 tokens: sdpa's big cells scale from it as N^2.
  step S3_sdpa_4096 30 90 bash "$W/cell.sh" S3_sdpa_4096 attention=sdpa resolution=4096 mode=infer
  # FlashAttention's backward is reported to fault once batch*heads*round_up(N,128)*max(d,32) > 2^31
  # (sdpa train at 9216², batch 4: 4*64*331776*32 = 2.7e9). The same bound at a fifth of the cost:
  # 4096², batch 20 (20*64*65536*32 = 2.7e9), one block, MLP ratio 1 (fits in memory), 3 steps.
  # Expected: error (an illegal memory access is a CUDA fault, not a documented size limit, so it
  # is measured again on resume) or, if fixed in this torch, ok. `attention_kernel` says which
  # sdpa backend ran; pin one with attention.backend=flash|efficient|cudnn|math.
  step S4_sdpa_bwd_2e31 60 120 bash "$W/cell.sh" S4_sdpa_bwd_2e31 attention=sdpa resolution=4096 batch_size=20 mode=train model.depth=1 model.mlp_ratio=1.0 timing.warmup_iters=1 timing.warmup_s=0 timing.min_iters=1 timing.window_s=0.1 energy.idle_s=0
  step S5_after_fault 20 45 bash "$W/cell.sh" S5_after attention=linear_infsa resolution=224 mode=infer
  set +x
  nvidia-smi --query-gpu=memory.used,temperature.gpu,power.draw,clocks.sm --format=csv 2>&1
  cp -f "$W/doctor.json" "$W/runs/" 2>/dev/null
  cp -f "$W/steps.txt" "$W/runs/" 2>/dev/null
  tar -czf "$OUT/runs.tar.gz" -C "$W" runs reports 2>/dev/null || tar -czf "$OUT/runs.tar.gz" -C "$W" runs
  if [ "$(stat -c %s "$OUT/runs.tar.gz")" -gt 15000000 ]; then
    tar -czf "$OUT/runs.tar.gz" -C "$W" runs
  fi
  echo "=================== SUMMARY (also $OUT/summary.txt) ==================="
  grep -E "^attnbench-doctor:" "$OUT/doctor.txt" 2>/dev/null
  "$PY" - <<'EOF'
import json, os
try:
    p = json.load(open(os.environ["OUT"] + "/probe.json"))
except (OSError, ValueError) as e:
    print("probe: none", e)
else:
    keys = ("name", "driver", "torch", "persistence", "context_s", "matmul_tflops", "counter_step_ms",
            "power_w", "load_energy_j", "crossing_ms_after", "sm_clock_load_mhz",
            "sm_below_90pct_ms_after_end", "reasons_during_load", "reasons_1s_after_end",
            "violation_ns_during_3s_load", "call_ms", "procs_before_ctx", "procs_after_ctx", "pid",
            "sdpa_backend")
    for k in keys:
        print(f"probe {k}: {json.dumps(p.get(k), default=str)}")
EOF
  "$PY" "$W/summary.py"
  echo "total $(($(date +%s) - T0)) s; files in $OUT:"
  ls -la "$OUT"
}

main 2>&1 | tee "$OUT/log.txt"
