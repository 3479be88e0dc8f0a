# Sourced (not run) by the scripts in pipelines/ and training/: the repository root as working directory with
# .venv on PATH, and `run`, which runs a command or, with DRY_RUN set, prints it shell-quoted.
# shellcheck shell=bash

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$repo_root/.venv/bin:$PATH"
cd "$repo_root"
DRY_RUN=""

run() {
    if [[ -n "$DRY_RUN" ]]; then
        printf '%q ' "$@" | sed 's/ $//'
        echo
    else
        echo "+ $*" >&2
        "$@"
    fi
}
