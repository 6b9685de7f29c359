#!/usr/bin/env bash
# The paper's result tables: every guidance mode the paper ran, on every task of a scenario.
#
#   specs/paper/run_table.sh [nlp|lm|speech|all]      (default: all)
#   DRY_RUN=1 specs/paper/run_table.sh nlp             (print the commands instead)
#
# Each run is named <spec>-<mode> (runs/paper/<name>/); the teachers' fine-tuning runs are shared
# through runs/paper/teachers/, so each task's teacher is trained once. Extra settings per mode:
#   unguided: the student starts from the pretrained (source) model, as in the paper's code
#   hybrid:   T_h, the paper's number of guided steps for each task; speech keeps its logit
#             distillation after T_h (the paper's code set only alpha_LD to 0 at the switch)
set -euo pipefail

here=$(dirname "$0")

run() {  # run SPEC MODE [SECTION.KEY=VALUE ...]
    local spec=$1 mode=$2
    shift 2
    local args=("$here/$spec.toml" --set "experiment.name=$spec-$mode" --set "guidance.mode=$mode")
    for setting in "$@"; do args+=(--set "$setting"); done
    if [[ -n "${DRY_RUN:-}" ]]; then
        echo "python -m cald_framework run ${args[*]}"
    else
        python -m cald_framework run "${args[@]}"
    fi
}

nlp() {
    local -A guided_steps=([qnli]=10000 [qqp]=40000 [sst2]=5000 [imdb]=3000)
    for task in qnli qqp sst2 imdb; do
        local spec=nlp-roberta-linformer-$task
        run "$spec" unguided student.init=source
        run "$spec" target
        run "$spec" trajectory
        run "$spec" waypoint
        run "$spec" hybrid "guidance.T_h=${guided_steps[$task]}"
    done
}

lm() {
    local spec=lm-pythia1b-mamba-pile
    run "$spec" unguided student.init=source
    run "$spec" target
    run "$spec" hybrid guidance.T_h=0.4
}

speech() {
    local -A guided_steps=([tedlium]=40000 [slurp]=30000 [voxceleb1]=50000)
    for task in tedlium slurp voxceleb1; do
        local spec=speech-wav2vec2-bimamba2-$task
        run "$spec" unguided student.init=source
        run "$spec" target
        run "$spec" waypoint
        run "$spec" hybrid "guidance.T_h=${guided_steps[$task]}" guidance.keep_kd_after_switch=true
    done
}

case "${1:-all}" in
    nlp) nlp ;;
    lm) lm ;;
    speech) speech ;;
    all) nlp; lm; speech ;;
    *) echo "usage: $0 [nlp|lm|speech|all]" >&2; exit 2 ;;
esac
