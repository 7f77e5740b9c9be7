#!/usr/bin/env bash
# Stop the training processes on every worker (SIGTERM, so the loop writes a checkpoint; SIGKILL
# after --timeout), and with --delete also delete the TPU VM (or its queued resource with --spot /
# --queued: `queued-resources delete --force` deletes the node too).
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DELETE=0
SKIP_STOP=0
STOP_TIMEOUT=${STOP_TIMEOUT:-120}

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME --project ID --zone ZONE --tpu-name NAME [--delete [--skip-stop]] [flags]

Flags of this script:
  --timeout S     seconds between SIGTERM and SIGKILL (default 120: time to save) [STOP_TIMEOUT]
  --delete        delete the TPU VM afterwards (its queued resource with --spot / --queued)
  --skip-stop     with --delete: do not ssh to the workers first (a preempted TPU cannot be reached)

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  if parse_common_flag "$@"; then shift "$OPT_SHIFT"; continue; fi
  case $1 in
    --timeout|--timeout=*) opt_value "$@"; STOP_TIMEOUT=$REPLY; shift "$OPT_SHIFT" ;;
    --delete) DELETE=1; shift ;;
    --skip-stop) SKIP_STOP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown flag $1 (see --help)" ;;
  esac
done
finish_common_flags
validate_location
validate_positive_int "$STOP_TIMEOUT" --timeout
[[ $SKIP_STOP == 0 || $DELETE == 1 ]] || die_usage "--skip-stop only makes sense with --delete"

if [[ $SKIP_STOP == 0 ]]; then
  stop_command=$(join_quoted bash "$(worker_script)" stop --run-name="$RUN_NAME" --timeout="$STOP_TIMEOUT")
  if [[ $DELETE == 1 ]]; then
    # The TPU goes anyway: an unreachable worker must not keep it (and its bill) alive.
    ssh_workers all "$stop_command" || log "stopping the workers failed; deleting anyway"
  else
    ssh_workers all "$stop_command"
  fi
fi
[[ $DELETE == 1 ]] || exit 0

location_flags
if [[ $QUEUED == 1 ]]; then
  run gcloud compute tpus queued-resources delete "$TPU_NAME" "${LOCATION_FLAGS[@]}" --force --quiet
else
  run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION_FLAGS[@]}" --quiet
fi
