#!/usr/bin/env bash
# The labeling loop around the DVC pipeline, on its dataset data/synced (docs/labeling.md, "The loop"):
#
#   bash pipelines/label-loop.sh push [OPTIONS]   # airwatt label setup, then airwatt label push OPTIONS
#   #   ... a person labels the tasks in Label Studio ...
#   bash pipelines/label-loop.sh pull [OPTIONS]   # airwatt label pull OPTIONS, then dvc repro
#   dvc push && git commit dvc.lock               # the labels are versioned with the data
#
# OPTIONS go to `airwatt label push` / `airwatt label pull` as they are (e.g. --model
# models:/airwatt-disaggregator@champion --budget 50). --dry-run prints the commands instead of running them.
# A re-sync keeps the pulled labels that still apply (docs/sync-prepare.md), so `dvc repro` reruns from sync.
# The Label Studio URL and token come from params.yaml `label` and the environment, as for `airwatt label`.
set -euo pipefail

DATA=data/synced  # the sync stage's output (dvc.yaml), where pulled labels land

usage() { sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

# shellcheck source=lib/common.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

step=""
options=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --dry-run) DRY_RUN=1 ;;
        push | pull) if [[ -z "$step" ]]; then step="$arg"; else options+=("$arg"); fi ;;
        *) options+=("$arg") ;;
    esac
done

case "$step" in
    push)
        run airwatt label setup --data "$DATA"
        run airwatt label push --data "$DATA" "${options[@]}"
        ;;
    pull)
        run airwatt label pull --data "$DATA" "${options[@]}"
        run dvc repro
        ;;
    *)
        usage >&2
        exit 2
        ;;
esac
