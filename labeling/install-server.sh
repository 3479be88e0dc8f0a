#!/usr/bin/env bash
# Install the Label Studio server into its OWN virtualenv: it pins label-studio-sdk and many Django packages
# exactly, so it must not share the workbench's .venv. Idempotent: a rerun with the venv complete is a no-op.
#
#   bash labeling/install-server.sh                        # -> .venv-labelstudio at the repo root
#   LABEL_STUDIO_VENV=/opt/ls bash labeling/install-server.sh
#
# The tests and `airwatt label` docs find the server through the same variable (default .venv-labelstudio).
set -euo pipefail

LABEL_STUDIO_VERSION="1.23.2"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LABEL_STUDIO_VENV:-$repo_root/.venv-labelstudio}"
python="${PYTHON:-python3}"
marker="$venv/.label-studio-installed"

# The marker is written last, so an interrupted install is redone rather than taken as finished.
if [[ -f "$marker" && "$(cat "$marker")" == "$LABEL_STUDIO_VERSION" && -x "$venv/bin/label-studio" ]]; then
    echo "label-studio $LABEL_STUDIO_VERSION already installed in $venv"
    exit 0
fi

echo "installing label-studio==$LABEL_STUDIO_VERSION into $venv (about 2 minutes)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$LABEL_STUDIO_VERSION"
echo "$LABEL_STUDIO_VERSION" >"$marker"
echo "label-studio $LABEL_STUDIO_VERSION installed in $venv"
