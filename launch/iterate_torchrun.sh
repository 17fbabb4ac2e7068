#!/usr/bin/env bash
# The B-STaR loop on the GPUs (or CPU cores) of one node: one driver process per device, each with its
# own vLLM engine (external_launcher) and FSDP2 training over all of them.
# Usage: NPROC=8 launch/iterate_torchrun.sh configs/iterate/mistral-7b_math.yaml [overrides...]
set -euo pipefail
config=${1:?usage: launch/iterate_torchrun.sh CONFIG [OVERRIDES...]}
shift
nproc=${NPROC:-8}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / nproc > 0 ? $(nproc) / nproc : 1 ))}
export TOKENIZERS_PARALLELISM=false
exec torchrun --standalone --nproc_per_node="$nproc" -m bstar_pl.cli iterate --config "$config" "$@"
