#!/usr/bin/env bash
# The monthly fleet report job on Ray (docs/reports.md, "The fleet job"): every device x local month of the
# dataset, with the champion model, into data/fleet (Parquet partitioned by month; resumable):
#
#   bash pipelines/fleet-report.sh [OPTIONS]   # airwatt fleet report --data data/validated --model
#                                               #   models:/airwatt-disaggregator@champion --out data/fleet OPTIONS
#
# OPTIONS go to `airwatt fleet report` as they are and win over the defaults above (e.g. --address auto for an
# existing Ray cluster, --workers 8, --period week, --pages, --model models:/airwatt-disaggregator/3).
# A rerun skips the partitions already written with the same model, params and readings.
# Exit status 3: some partitions failed (data/fleet/errors.parquet names them). --dry-run prints the command.
set -euo pipefail

usage() { sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$repo_root/.venv/bin:$PATH"
cd "$repo_root"

declare -A given=()
dry_run=""
options=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --dry-run) dry_run=1 ;;
        --data | --model | --out) given[$arg]=1; options+=("$arg") ;;
        *) options+=("$arg") ;;
    esac
done
defaults=()
[[ -z "${given[--data]:-}" ]] && defaults+=(--data data/validated)
[[ -z "${given[--model]:-}" ]] && defaults+=(--model models:/airwatt-disaggregator@champion)
[[ -z "${given[--out]:-}" ]] && defaults+=(--out data/fleet)

command=(airwatt fleet report "${defaults[@]}" "${options[@]}")
if [[ -n "$dry_run" ]]; then
    printf '%q ' "${command[@]}" | sed 's/ $//'
    echo
else
    echo "+ ${command[*]}" >&2
    exec "${command[@]}"
fi
