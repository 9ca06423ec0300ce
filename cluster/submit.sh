#!/usr/bin/env bash
# Precompute on a Slurm cluster: three dependent jobs.
#   1. finetune + evaluate, once per task (one GPU each is plenty);
#   2. a job array of N shards: extract, attribute, importance (--shard i/N, one process each);
#   3. analyse, once every shard has finished (afterok on the whole array).
# Every job runs the same `python -m precompute` options into one shared --out folder, which must
# lie on a filesystem all nodes see. Shards write separate part files and stage markers, and a
# rerun of any job resumes where it stopped, so a failed or pre-empted array task can simply be
# resubmitted (`sbatch --array=<i> ...`). Tested twice: tests/test_faults.py runs the same three
# steps as separate processes, and tests/test_slurm_real.py submits them to a real single-node
# Slurm; both compare the caches with one process's.
#
#   cluster/submit.sh SHARDS -- <precompute options, e.g. --tasks rte --out /shared/runs/minilm ...>
#
# Run it from the repository root: every job starts there and runs `python -m precompute` with
# .venv/bin/python (or EFFATTN_PYTHON). Site options (partition, account, time, GPUs) go in
# SBATCH_* environment variables or in cluster/precompute.sbatch's #SBATCH lines; options that
# have no SBATCH_* variable, such as a smaller --cpus-per-task, go in EFFATTN_SBATCH_OPTIONS
# (split at spaces, given to every sbatch call, and stronger than the #SBATCH lines), e.g.
#   EFFATTN_SBATCH_OPTIONS="--cpus-per-task=2 --mem=8G" cluster/submit.sh 4 -- ...
# Job logs go to EFFATTN_LOG_DIR (default: the repository root), one file per job and array task.
set -euo pipefail
shards=${1:?usage: cluster/submit.sh SHARDS -- PRECOMPUTE_OPTIONS...}
shift
[[ ${1:-} == "--" ]] && shift
here="$(cd "$(dirname "$0")" && pwd)"
if [[ ! -d precompute ]]; then
  echo "error: cluster/submit.sh runs its jobs in the folder it is started from, which must be the repository" \
    "root (with precompute/), not $PWD; cd $(dirname "$here") first" >&2
  exit 2
fi
logs=${EFFATTN_LOG_DIR:-.}  # one log per job: effattn-finetune-<job>.log, effattn-shards-<array>_<i>.log, ...
mkdir -p "$logs"
read -ra site <<< "${EFFATTN_SBATCH_OPTIONS:-}"

first=$(sbatch --parsable --job-name=effattn-finetune --output="$logs/%x-%j.log" "${site[@]}" \
  "$here/precompute.sbatch" "$@" --stages finetune,evaluate)
array=$(sbatch --parsable --job-name=effattn-shards --output="$logs/%x-%A_%a.log" "${site[@]}" \
  --dependency="afterok:$first" --array="0-$((shards - 1))" --export=ALL,EFFATTN_SHARDS="$shards" \
  "$here/precompute.sbatch" "$@" --stages extract,attribute,importance)
last=$(sbatch --parsable --job-name=effattn-analyse --output="$logs/%x-%j.log" "${site[@]}" \
  --dependency="afterok:$array" "$here/precompute.sbatch" "$@" --stages analyse)
echo "submitted: finetune+evaluate $first, shards $array (0-$((shards - 1))), analyse $last"
