#!/usr/bin/env bash
# Build the Loupe one-folder bundle with PyInstaller, then smoke-test it.
#
#   bash packaging/build.sh            # or: make package
#
# Environment (all optional):
#   LOUPE_BUILD_PYTHON  interpreter of the environment to freeze (default: .venv/bin/python); it must
#                       have Loupe and its dependencies installed — PyInstaller freezes what it finds there
#   LOUPE_BUILD_DIR     where build/ and dist/ go (default: /tmp/loupe-build, outside the repository)
#   LOUPE_SMOKE_DICOM   folder of DICOM files for the import smoke test (default: ../shared/data/dicom)
#   LOUPE_SKIP_BUILD=1  only smoke-test an existing bundle
#   LOUPE_SMOKE_QUICK=1 skip the slowest smoke test (demo workspace + a training run, ~3 min on 2 cores)
# The bundle ends up at $LOUPE_BUILD_DIR/dist/loupe/ (run it as dist/loupe/loupe). See packaging/README.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${LOUPE_BUILD_PYTHON:-$ROOT/.venv/bin/python}
OUT=${LOUPE_BUILD_DIR:-/tmp/loupe-build}
DICOM=${LOUPE_SMOKE_DICOM:-$ROOT/../shared/data/dicom}
BUNDLE=$OUT/dist/loupe
LOUPE=$BUNDLE/loupe

say() { printf '\n== %s\n' "$*"; }
fail() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || fail "no interpreter at $PY (run 'make test' once to create .venv, or set LOUPE_BUILD_PYTHON)"

if [ "${LOUPE_SKIP_BUILD:-0}" != 1 ]; then
    # The `package` extra in pyproject.toml names PyInstaller; install only it, never the torch stack.
    if ! "$PY" -c 'import PyInstaller' 2>/dev/null; then
        say "installing PyInstaller into $("$PY" -c 'import sys; print(sys.prefix)')"
        "$PY" -m pip install --quiet --disable-pip-version-check 'pyinstaller>=6.10'
    fi
    if [ ! -s "$ROOT/packaging/icons/loupe.png" ]; then
        QT_QPA_PLATFORM=offscreen "$PY" "$ROOT/packaging/render_icon.py"
    fi
    free_gb=$(df -Pk "$(dirname "$OUT")" | awk 'NR==2 {print int($4 / 1048576)}')
    [ "$free_gb" -ge 15 ] || echo "build.sh: warning: only ${free_gb} GB free near $OUT; a CUDA torch bundle needs ~15 GB while building" >&2
    say "PyInstaller $("$PY" -m PyInstaller --version) → $BUNDLE"
    start=$SECONDS
    (cd "$ROOT" && "$PY" -m PyInstaller --noconfirm --log-level WARN \
        --distpath "$OUT/dist" --workpath "$OUT/build" packaging/loupe.spec)
    echo "built in $((SECONDS - start)) s"
fi

[ -x "$LOUPE" ] || fail "no bundle at $LOUPE"
SMOKE=$(mktemp -d "${TMPDIR:-/tmp}/loupe-smoke.XXXXXX")
trap 'rm -rf "$SMOKE"' EXIT
WS=$SMOKE/workspace.sqlite
# Keep the bundle's settings, logs and caches out of the user's real folders.
export XDG_CONFIG_HOME=$SMOKE/config XDG_DATA_HOME=$SMOKE/data XDG_CACHE_HOME=$SMOKE/cache XDG_STATE_HOME=$SMOKE/state

say "smoke 1/6: loupe --help"
"$LOUPE" --help > "$SMOKE/help.txt"
grep -q "import" "$SMOKE/help.txt" || fail "--help does not list the import command"
head -3 "$SMOKE/help.txt"

say "smoke 2/6: import DICOM (JPEG-LS, JPEG lossless, RLE, JPEG baseline, JPEG 2000 via pylibjpeg plugins)"
[ -d "$DICOM" ] || fail "no DICOM folder at $DICOM (set LOUPE_SMOKE_DICOM)"
mkdir -p "$SMOKE/dicom"
cp "$DICOM"/*.dcm "$SMOKE/dicom/"
# The shared set has no JPEG 2000 file: encode one with the build environment's openjpeg plugin.
if [ -f "$DICOM/RG3_UNC.dcm" ]; then
    "$PY" - "$DICOM/RG3_UNC.dcm" "$SMOKE/dicom/RG3_J2K.dcm" <<'PYEOF'
import sys
import pydicom
from pydicom.uid import JPEG2000Lossless
ds = pydicom.dcmread(sys.argv[1])
ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
ds.save_as(sys.argv[2])
PYEOF
fi
n_files=$(ls "$SMOKE/dicom"/*.dcm | wc -l)
"$LOUPE" --workspace "$WS" import "$SMOKE/dicom" --json > "$SMOKE/import.json"
cat "$SMOKE/import.json"; echo
"$PY" - "$SMOKE/import.json" "$n_files" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert not r["errors"], f"import refused files: {r['errors']}"
assert r["imported"] == int(sys.argv[2]), f"imported {r['imported']} of {sys.argv[2]} files"
PYEOF

say "smoke 3/6: render every imported image (decodes the pixel data)"
"$LOUPE" --workspace "$WS" list --json > "$SMOKE/list.json"
"$PY" -c 'import json, sys; [print(r["id"], r["path"].rsplit("/", 1)[-1]) for r in json.load(open(sys.argv[1]))]' \
    "$SMOKE/list.json" > "$SMOKE/ids.txt"
while read -r id name; do
    "$LOUPE" --workspace "$WS" render "$id" --out "$SMOKE/render_$id.png"
    [ -s "$SMOKE/render_$id.png" ] || fail "render of $name wrote nothing"
    echo "  rendered $name"
done < "$SMOKE/ids.txt"

say "smoke 4/6: model with the bundled EfficientNet-Lite0 ImageNet weights"
"$LOUPE" --workspace "$WS" model create --arch efficientnet_lite0 --classes normal,abnormal --pretrained default --json \
    | tee "$SMOKE/model.json"; echo
grep -q "ImageNet" "$SMOKE/model.json" || fail "the bundle did not find the EfficientNet-Lite0 weights file"

say "smoke 5/6: GUI starts (offscreen) and renders its window"
rm -f "$SMOKE/gui.png"
QT_QPA_PLATFORM=offscreen "$LOUPE" --workspace "$WS" gui --screenshot "$SMOKE/gui.png"
[ -s "$SMOKE/gui.png" ] || fail "gui --screenshot wrote nothing"
cp "$SMOKE/gui.png" "$OUT/pkg.png"
echo "  screenshot: $OUT/pkg.png"
ls "$BUNDLE/_internal/PySide6/Qt/plugins/platforms/" | grep -q xcb || fail "the xcb platform plugin is missing"

say "smoke 6/6: demo workspace, fine-tuned in a child process (the binary standing in for python -m)"
if [ "${LOUPE_SMOKE_QUICK:-0}" = 1 ]; then
    echo "  skipped (LOUPE_SMOKE_QUICK=1)"
else
    "$LOUPE" --workspace "$SMOKE/demo.sqlite" demo --json > "$SMOKE/demo.json"
    cat "$SMOKE/demo.json"; echo
    "$PY" - "$SMOKE/demo.json" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
assert not r["errors"] and r.get("trained"), f"demo did not train a model: {r}"
PYEOF
fi

say "bundle: $BUNDLE ($(du -sh "$BUNDLE" | cut -f1))"
