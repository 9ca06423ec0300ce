#!/usr/bin/env bash
# Precompute on a Slurm cluster: three dependent jobs.
#   1. finetune + evaluate, once per task (one GPU each is plenty);
#   2. a job array of N shards: extract, attribute, importance (--shard i/N, one process each);
#   3. analyse, once every shard has finished (afterok on the whole array).
# Every job runs the same `python -m precompute` options into one shared --out folder, which must
# lie on a filesystem all nodes see. Shards write separate part files and stage markers, and a
# rerun of any job resumes where it stopped, so a failed or pre-empted array task can simply be
# resubmitted (`sbatch --array=<i> ...`). Tested without Slurm: tests/test_faults.py runs the same
# three steps as separate processes and compares the caches with one process's.
#
#   cluster/submit.sh SHARDS -- <precompute options, e.g. --tasks rte --out /shared/runs/minilm ...>
#
# Site options (partition, account, time, GPUs) go in SBATCH_* environment variables or in
# cluster/precompute.sbatch's #SBATCH lines.
set -euo pipefail
shards=${1:?usage: cluster/submit.sh SHARDS -- PRECOMPUTE_OPTIONS...}
shift
[[ ${1:-} == "--" ]] && shift
here="$(cd "$(dirname "$0")" && pwd)"

first=$(sbatch --parsable --job-name=effattn-finetune "$here/precompute.sbatch" \
  "$@" --stages finetune,evaluate)
array=$(sbatch --parsable --job-name=effattn-shards --dependency="afterok:$first" --array="0-$((shards - 1))" \
  --export=ALL,EFFATTN_SHARDS="$shards" "$here/precompute.sbatch" "$@" --stages extract,attribute,importance)
last=$(sbatch --parsable --job-name=effattn-analyse --dependency="afterok:$array" "$here/precompute.sbatch" \
  "$@" --stages analyse)
echo "submitted: finetune+evaluate $first, shards $array (0-$((shards - 1))), analyse $last"
