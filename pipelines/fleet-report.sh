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

# shellcheck source=lib/common.bash
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.bash"

declare -A defaults=([--data]=data/validated [--model]=models:/airwatt-disaggregator@champion [--out]=data/fleet)
options=()
for arg in "$@"; do
    [[ "$arg" == -h || "$arg" == --help ]] && { usage; exit 0; }
    [[ "$arg" == --dry-run ]] && { DRY_RUN=1; continue; }
    unset "defaults[$arg]"  # an option given wins over its default
    options+=("$arg")
done
chosen=()
for key in --data --model --out; do
    [[ -n "${defaults[$key]:-}" ]] && chosen+=("$key" "${defaults[$key]}")
done
run airwatt fleet report "${chosen[@]}" "${options[@]}"
