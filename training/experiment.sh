#!/usr/bin/env bash
# Named experiments of the cross-house protocol (docs/generalisation.md): each is one `airwatt protocol`
# command, its overrides given as options (--set SECTION.KEY=VALUE on top of params.yaml; no file to load).
#
#   bash training/experiment.sh NAME [OPTIONS]    # run it; OPTIONS are added to its command (--work DIR,
#                                                 #   --no-mlflow, more --set ...)
#   bash training/experiment.sh NAME --dry-run    # print the command instead
#   bash training/experiment.sh --list            # the names and their commands
#
# Results: the work folder (default data/protocol: sources and the mix are shared, each run's result is keyed
# by its parameters, so reruns resume) and an MLflow parent run with a child per model, fold and seed.
set -euo pipefail

usage() { sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

NAMES=(protocol quick-fold offline-model ablation)
declare -A ABOUT=(
    [protocol]="the full form: params.yaml protocol (every fold, seed and model; cross-dataset; the curve)"
    [quick-fold]="one REDD fold, one seed, 300 steps: does a change help at all"
    [offline-model]="the offline (midpoint) multitask model, reduced: seed 1, the REDD folds, 300 steps"
    [ablation]="one recipe change on the REDD folds, seed 1, no curve: add --set SECTION.KEY=VALUE"
)
declare -A OPTIONS=(  # words without spaces or quotes
    [protocol]=""
    [quick-fold]="--fold redd-house3 --seed 1 --no-cross --max-steps 300"
    [offline-model]="--model multitask --seed 1 --no-cross --max-steps 300"
    [ablation]="--seed 1 --no-cross --set protocol.adapt=null"
)

# shellcheck source=../pipelines/lib/common.bash
source "$(dirname "${BASH_SOURCE[0]}")/../pipelines/lib/common.bash"

name=""
extra=()
for arg in "$@"; do
    case "$arg" in
        -h | --help) usage; exit 0 ;;
        --list)
            for n in "${NAMES[@]}"; do
                options="${OPTIONS[$n]}"
                printf '%s\n    %s\n    airwatt protocol%s\n' "$n" "${ABOUT[$n]}" "${options:+ $options}"
            done
            exit 0
            ;;
        --dry-run) DRY_RUN=1 ;;
        *) if [[ -z "$name" ]]; then name="$arg"; else extra+=("$arg"); fi ;;
    esac
done

if [[ -z "$name" || -z "${ABOUT[$name]+set}" ]]; then
    usage >&2
    echo "unknown experiment '${name}': one of ${NAMES[*]}" >&2
    exit 2
fi
read -r -a recipe <<<"${OPTIONS[$name]}"
run airwatt protocol "${recipe[@]}" "${extra[@]}"
