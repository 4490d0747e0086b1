#!/usr/bin/env bash
# Build an offline wheelhouse: mlops-console, the first-party plugins asked for and every
# dependency, as wheels in one folder, so a classroom of machines installs with no network.
#
#   bash packaging/wheelhouse.sh [--out DIR] [--plugins edge-ssh,dask] [--python PY]
#
# --plugins takes names of folders under plugins/ without the "mlops-" prefix, "all", or
# "none" (default: edge-ssh, which the fleet lab needs). The wheels are for the Python and
# platform of the machine that builds them (run it with the classroom's Python version on
# the classroom's architecture). It writes DIR/install.sh, which installs from DIR alone:
#
#   bash DIR/install.sh [VENV]      # default VENV: ./mlops-venv
set -euo pipefail
cd "$(dirname "$0")/.."

out=wheelhouse
plugins=edge-ssh
python=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --plugins) plugins=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "wheelhouse.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

projects=(.)
names=(mlops-console)
if [ "$plugins" = all ]; then
  for d in plugins/mlops-*/; do
    [ "$(basename "$d")" = mlops-example ] && continue
    projects+=("${d%/}"); names+=("$(basename "$d")")
  done
elif [ "$plugins" != none ]; then
  IFS=, read -ra wanted <<< "$plugins"
  for p in "${wanted[@]}"; do
    d="plugins/mlops-${p#mlops-}"
    if [ ! -f "$d/pyproject.toml" ]; then
      echo "wheelhouse.sh: no plugin '$p' (plugins/: $(ls plugins | tr '\n' ' '))" >&2
      exit 2
    fi
    projects+=("$d"); names+=("$(basename "$d")")
  done
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
echo "[1/3] wheels of ${names[*]}" >&2
# --no-deps: the project's own wheels only; pip download takes their dependencies next
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$out" "${projects[@]}"
echo "[2/3] every dependency, as wheels (pip download)" >&2
"$python" -m pip download --quiet --dest "$out" --only-binary=:all: pip setuptools wheel hatchling
"$python" -m pip download --quiet --dest "$out" --prefer-binary "${projects[@]}"
# pip download leaves source archives for what has no wheel: build them here, once
shopt -s nullglob
sdists=("$out"/*.tar.gz "$out"/*.zip)
if [ ${#sdists[@]} -gt 0 ]; then
  "$python" -m pip wheel --quiet --no-deps --no-index --find-links "$out" --wheel-dir "$out" "${sdists[@]}"
  rm -f "${sdists[@]}"
fi

cat > "$out/install.sh" <<EOF
#!/usr/bin/env bash
# Install ${names[*]} from this folder alone (no network): bash install.sh [VENV]
set -euo pipefail
here=\$(cd "\$(dirname "\$0")" && pwd)
venv=\${1:-mlops-venv}
${python##*/} -m venv "\$venv"
"\$venv/bin/pip" install --quiet --no-index --find-links "\$here" --upgrade pip
"\$venv/bin/pip" install --quiet --no-index --find-links "\$here" ${names[*]}
echo "Installed: \$venv/bin/mlops (try: \$venv/bin/mlops lab list)"
EOF
chmod +x "$out/install.sh"
n=$(ls "$out"/*.whl | wc -l)
size=$(du -sh "$out" | cut -f1)
echo "[3/3] $n wheels, $size in $out; install with: bash $out/install.sh [VENV]" >&2
