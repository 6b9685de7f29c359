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
#   NLP:      each mode's cells of the paper's Table 4 (see nlp below)
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
    # Table 4 of the paper (Appendix A), per task. Each spec holds the target mode's cells (lr,
    # alpha_ld, Linformer sharing), which hybrid uses too, and the teacher fine-tuning run's lr;
    # the other modes set theirs here. The trajectory teacher trains at the teacher's lr.
    local -A guided_steps=([qnli]=10000 [qqp]=40000 [sst2]=5000 [imdb]=3000)
    local -A teacher_lr=([qnli]=3e-5 [qqp]=3e-5 [sst2]=3e-5 [imdb]=1e-5)
    #                      lr    share
    local -A unguided=([qnli]="1e-5 kv" [qqp]="1e-5 layer" [sst2]="3e-5 kv" [imdb]="1e-5 kv")
    #                        lr   alpha_ld share  T_u
    local -A trajectory=([qnli]="3e-4 30 layer 5" [qqp]="1e-4 25 kv 1" [sst2]="1e-4 30 kv 3" [imdb]="3e-4 40 kv 3")
    #                      lr   alpha_ld share
    local -A waypoint=([qnli]="1e-4 10 kv" [qqp]="1e-4 20 layer" [sst2]="1e-4 5 kv" [imdb]="3e-4 25 kv")
    local lr alpha share every
    for task in qnli qqp sst2 imdb; do
        local spec=nlp-roberta-linformer-$task
        read -r lr share <<<"${unguided[$task]}"
        run "$spec" unguided student.init=source "training.lr=$lr" "student.mixer_options.share=$share"
        run "$spec" target
        read -r lr alpha share every <<<"${trajectory[$task]}"
        run "$spec" trajectory "training.lr=$lr" "guidance.alpha_ld=$alpha" \
            "student.mixer_options.share=$share" "guidance.T_u=$every" "guidance.teacher_lr=${teacher_lr[$task]}"
        read -r lr alpha share <<<"${waypoint[$task]}"
        run "$spec" waypoint "training.lr=$lr" "guidance.alpha_ld=$alpha" "student.mixer_options.share=$share"
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
