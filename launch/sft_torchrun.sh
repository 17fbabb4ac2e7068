#!/usr/bin/env bash
# SFT on the GPUs of one node with torchrun (one process per GPU, FSDP2 over all of them).
# Usage: launch/sft_torchrun.sh configs/sft/mistral-7b.yaml [LightningCLI overrides...]   (NPROC=4 for 4 GPUs)
set -euo pipefail
config=${1:?usage: launch/sft_torchrun.sh CONFIG [OVERRIDES...]}
shift
nproc=${NPROC:-8}
# One OpenMP thread per core share: torch's default (all cores per process) oversubscribes the node.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / nproc > 0 ? $(nproc) / nproc : 1 ))}
export TOKENIZERS_PARALLELISM=false
# The config's ModelParallelStrategy data_parallel_size must equal the process count (override it too).
exec torchrun --standalone --nproc_per_node="$nproc" -m bstar_pl.cli sft fit --config "$config" --trainer.devices="$nproc" "$@"
