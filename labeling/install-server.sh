#!/usr/bin/env bash
# Install the Label Studio server into its OWN virtualenv: it pins label-studio-sdk and many Django packages
# exactly, so it must not share the workbench's .venv. Idempotent: a rerun with the venv complete is a no-op.
#
#   bash labeling/install-server.sh                        # -> .venv-labelstudio at the repo root
#   LABEL_STUDIO_VENV=/opt/ls bash labeling/install-server.sh
#
# The tests and `airwatt label` docs find the server through the same variable (default .venv-labelstudio).
#
# Every dependency is pinned by labeling/constraints-labelstudio.txt (a `pip freeze` of a working install), so
# two installs months apart get the same Django stack. `make lock-label-server` regenerates it.
set -euo pipefail

LABEL_STUDIO_VERSION="1.23.2"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LABEL_STUDIO_VENV:-$repo_root/.venv-labelstudio}"
python="${PYTHON:-python3}"
constraints="$repo_root/labeling/constraints-labelstudio.txt"
marker="$venv/.label-studio-installed"

if ! grep -qx "label-studio==$LABEL_STUDIO_VERSION" "$constraints"; then
    echo "$constraints does not pin label-studio==$LABEL_STUDIO_VERSION: run make lock-label-server" >&2
    exit 1
fi
# The marker (version + the constraints' hash) is written last, so an interrupted install is redone rather than
# taken as finished, and a changed constraints file reinstalls.
want="$LABEL_STUDIO_VERSION $(sha256sum "$constraints" | cut -c1-16)"
if [[ -f "$marker" && "$(cat "$marker")" == "$want" && -x "$venv/bin/label-studio" ]]; then
    echo "label-studio $LABEL_STUDIO_VERSION already installed in $venv"
    exit 0
fi

echo "installing label-studio==$LABEL_STUDIO_VERSION into $venv (about 2 minutes)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$constraints" "label-studio==$LABEL_STUDIO_VERSION"
echo "$want" >"$marker"
echo "label-studio $LABEL_STUDIO_VERSION installed in $venv"
