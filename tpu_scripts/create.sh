#!/usr/bin/env bash
# Create a TPU VM or pod slice. On-demand / --preemptible: `gcloud compute tpus tpu-vm create`
# (returns when the TPU is READY). --spot / --queued: a queued resource of the same name
# (`gcloud compute tpus queued-resources create --node-id=NAME`), then poll until it is ACTIVE.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

POLL_INTERVAL=${POLL_INTERVAL:-30}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-0}
NO_WAIT=0
EXTRA_CREATE=()

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME --project ID --zone ZONE --tpu-name NAME --accelerator-type TYPE \\
         [--spot | --queued | --preemptible] [flags] [-- GCLOUD_CREATE_FLAGS...]

Creates the TPU VM / pod slice NAME. With --spot or --queued it requests a queued resource NAME
(node id NAME) and waits until it is ACTIVE (WAITING_FOR_RESOURCES can take hours). Flags after --
go to the gcloud create command unchanged, e.g. -- --network=my-net --service-account=SA --reserved

Flags of this script:
  --poll-interval S   seconds between queued-resource state checks (default 30) [POLL_INTERVAL]
  --wait-timeout S    give up waiting for ACTIVE after S seconds, 0 = never (default 0) [WAIT_TIMEOUT]
  --no-wait           return right after the queued-resource request

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  if parse_common_flag "$@"; then shift "$OPT_SHIFT"; continue; fi
  case $1 in
    --poll-interval|--poll-interval=*) opt_value "$@"; POLL_INTERVAL=$REPLY; shift "$OPT_SHIFT" ;;
    --wait-timeout|--wait-timeout=*) opt_value "$@"; WAIT_TIMEOUT=$REPLY; shift "$OPT_SHIFT" ;;
    --no-wait) NO_WAIT=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_CREATE=("$@"); break ;;
    *) die_usage "unknown flag $1 (see --help)" ;;
  esac
done
finish_common_flags
validate_location
validate_accelerator_type
validate_positive_int "$POLL_INTERVAL" --poll-interval
validate_positive_int "$WAIT_TIMEOUT" --wait-timeout
location_flags

if [[ $QUEUED == 0 ]]; then
  create=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION_FLAGS[@]}"
    --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION")
  [[ $PREEMPTIBLE == 1 ]] && create+=(--preemptible)
  run "${create[@]}" "${EXTRA_CREATE[@]}"
  exit 0
fi

create=(gcloud compute tpus queued-resources create "$TPU_NAME" "${LOCATION_FLAGS[@]}"
  --node-id="$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --runtime-version="$RUNTIME_VERSION")
[[ $SPOT == 1 ]] && create+=(--spot)
run "${create[@]}" "${EXTRA_CREATE[@]}"
[[ $NO_WAIT == 1 ]] && exit 0

describe=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOCATION_FLAGS[@]}"
  --format="value(state.state)")
if [[ $DRY_RUN == 1 ]]; then
  run "${describe[@]}"
  dry_note "repeated every ${POLL_INTERVAL}s until the state is ACTIVE"
  exit 0
fi
started=$SECONDS
while true; do
  state=$(run "${describe[@]}") || die "could not read the state of queued resource $TPU_NAME"
  case $state in
    ACTIVE) log "queued resource $TPU_NAME is ACTIVE"; exit 0 ;;
    FAILED|SUSPENDED|SUSPENDING|DELETING)
      die "queued resource $TPU_NAME is $state; inspect it with: $(join_quoted "${describe[@]:0:7}")" ;;
    *) log "queued resource $TPU_NAME is ${state:-UNKNOWN}; next check in ${POLL_INTERVAL}s" ;;
  esac
  if ((WAIT_TIMEOUT > 0 && SECONDS - started >= WAIT_TIMEOUT)); then
    die "queued resource $TPU_NAME not ACTIVE after ${WAIT_TIMEOUT}s (state ${state:-UNKNOWN});" \
        "it stays queued: delete it with stop.sh --delete --queued"
  fi
  sleep "$POLL_INTERVAL"
done
