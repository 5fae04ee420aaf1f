#!/usr/bin/env bash
# Build, here on the CPU machine, the pure-Python wheels the H200 device machine lacks
# (hydra-core, omegaconf, antlr4-python3-runtime, fvcore, iopath, yacs, termcolor, and attnbench
# itself) into <repo>/wheelhouse-gpu, and put run_on_gpu.sh beside them, so that one carried
# folder brings everything. Every other need (torch, numpy, pyyaml, tqdm, Pillow, tabulate,
# portalocker, typing-extensions, packaging, pandas, seaborn, matplotlib, nvidia-ml-py, scipy) is
# expected on the GPU machine's image; the last step lists them to check, and run_on_gpu.sh's
# import line fails early, naming it, where one is missing.
#
#   bash benchmarks/gpu_check/make_wheels.sh [REPO=.] [OUTDIR=REPO/wheelhouse-gpu]
#
# antlr4-python3-runtime 4.9.3, fvcore 0.1.5.post20221221 and iopath 0.1.10 are published as
# sdists only, so this uses `pip wheel --no-deps` (it copies a published wheel, or builds one;
# all of these build to py3-none-any). Then, on the GPU machine:
#   bash wheelhouse-gpu/run_on_gpu.sh          (wheelhouse-gpu/ copied along with the tree)
set -euo pipefail
set -x
REPO=$(cd "${1:-.}" && pwd)
OUT=${2:-$REPO/wheelhouse-gpu}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PY:-python3}
mkdir -p "$OUT"
rm -f "$OUT"/*.whl

# The versions the project's CPU environments resolve to; unpinned if a pin is not on the index.
PKGS=(
  hydra-core==1.3.8
  omegaconf==2.3.1
  antlr4-python3-runtime==4.9.3
  fvcore==0.1.5.post20221221
  iopath==0.1.10
  yacs==0.1.8
  termcolor==3.3.0
)
for spec in "${PKGS[@]}"; do
  timeout 300 "$PY" -m pip wheel -q --no-deps --wheel-dir "$OUT" "$spec" \
    || timeout 300 "$PY" -m pip wheel -q --no-deps --wheel-dir "$OUT" "${spec%%==*}"
done

# attnbench itself, built from a copy of the working tree (tracked and untracked-not-ignored
# files, so uncommitted fixes are in it), so that the build leaves no build/ or egg-info in the
# checkout. Not fatal: run_on_gpu.sh links harness/running/hydra_plugin in when this wheel is
# missing.
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
(
  cd "$REPO"
  git ls-files -z -co --exclude-standard -- . ':(exclude)wheelhouse-gpu' \
    | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
    | tar --null -T - -cf -
) | tar -xf - -C "$SRC"
timeout 300 "$PY" -m pip wheel -q --no-deps --wheel-dir "$OUT" "$SRC" \
  || echo "make_wheels: WARNING: the attnbench wheel did not build; run_on_gpu.sh will link the checkout's hydra plugin instead"

# Pure-Python only, one version of each name (two stop the device's install).
"$PY" - "$OUT" <<'EOF'
import re, sys, zipfile
from pathlib import Path
out = Path(sys.argv[1])
wheels = sorted(out.glob("*.whl"))
names, bad = {}, []
for w in wheels:
    name, version, *rest = w.name[:-4].split("-")
    tag = "-".join(rest[-3:])
    if not tag.endswith("none-any"):
        bad.append(f"not pure-Python: {w.name}")
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in names:
        bad.append(f"two versions of {key}: {names[key]} and {w.name}")
    names[key] = w.name
bundled = set(names)
needs = set()
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:") and "extra ==" not in line:
                spec = line.split(":", 1)[1].split(";")[0].strip()
                marker = line.split(";", 1)[1] if ";" in line else ""
                if "python_version <" in marker or 'python_version ==' in marker:
                    continue
                req = re.split(r"[<>=!~ (\[]", spec, maxsplit=1)[0]
                if re.sub(r"[-_.]+", "-", req).lower() not in bundled:
                    needs.add(req)
print("wheels:", *sorted(names.values()), sep="\n  ")
print("needed from the device image:", ", ".join(sorted(needs, key=str.lower)))
if bad:
    sys.exit("make_wheels: " + "; ".join(bad))
EOF

cp "$HERE/run_on_gpu.sh" "$OUT/run_on_gpu.sh"
# Keep the folder out of commits; being ignored, it must be named explicitly to travel with the tree.
(
  cd "$REPO"
  ex=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$ex")"
  grep -qxF '/wheelhouse-gpu/' "$ex" 2>/dev/null || echo '/wheelhouse-gpu/' >>"$ex"
)
ls -la "$OUT"
du -sh "$OUT"
set +x
echo "next, on the GPU machine, with wheelhouse-gpu/ copied along: bash wheelhouse-gpu/run_on_gpu.sh"
