#!/usr/bin/env bash
# Run the same `jaxcpt train --gin_file=... --gin.MODEL_DIR=...` on every worker (--worker=all),
# under nohup in its own process group (it survives the ssh session; log ~/jaxcpt-logs/RUN.log on
# each worker), then follow each worker's log into LOG_DIR/worker-<i>.log until training ends.
# Resuming is automatic: the training loop restores the latest checkpoint in MODEL_DIR.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DETACH=0
FOLLOW_ONLY=0
EXTRA_ARGS=()

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME --project ID --zone ZONE --tpu-name NAME --accelerator-type TYPE \\
         --gin-file gin/adapt/NAME.gin [--gin-file ...] --model-dir gs://BUCKET/RUN [flags] [-- EXTRA...]

Starts on every worker:  jaxcpt train --gin_file=FILE... --gin.MODEL_DIR="'MODEL_DIR'" EXTRA...
EXTRA are passed to \`jaxcpt train\` unchanged, e.g. -- --gin.TRAIN_STEPS=20000

Flags of this script:
  --detach        start and return; do not follow the logs
  --follow-only   do not start anything; follow the workers' logs into LOG_DIR/worker-<i>.log

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  if parse_common_flag "$@"; then shift "$OPT_SHIFT"; continue; fi
  case $1 in
    --detach) DETACH=1; shift ;;
    --follow-only) FOLLOW_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) die_usage "unknown flag $1 (see --help; arguments for jaxcpt train go after --)" ;;
  esac
done
finish_common_flags
validate_location
resolve_num_workers
[[ $DETACH == 1 && $FOLLOW_ONLY == 1 ]] && die_usage "--detach and --follow-only exclude each other"

worker=$(worker_script)

if [[ $FOLLOW_ONLY == 0 ]]; then
  validate_model_dir
  ((${#GIN_FILES[@]})) || die_usage "missing --gin-file (or set GIN_FILE), e.g. gin/adapt/NAME.gin"
  train=(train)
  for gin in "${GIN_FILES[@]}"; do train+=(--gin_file="$gin"); done
  # gin wants a string literal: --gin.MODEL_DIR="'gs://...'"
  train+=(--gin.MODEL_DIR="'$MODEL_DIR'")
  ((${#EXTRA_ARGS[@]})) && train+=("${EXTRA_ARGS[@]}")
  ssh_workers all "$(join_quoted bash "$worker" start --run-name="$RUN_NAME" -- "${train[@]}")"
  if [[ $DETACH == 1 ]]; then
    if [[ $DRY_RUN == 0 ]]; then
      log "started on $NUM_WORKERS worker(s); follow the logs with: $SCRIPT_NAME --follow-only (same flags)"
    fi
    exit 0
  fi
fi

# One ssh per worker, so each worker's log lands in its own local file (appended across relaunches).
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOG_DIR"
location_flags
follower_pids=()
for ((i = 0; i < NUM_WORKERS; i++)); do
  run_background_logged "$LOG_DIR/worker-$i.log" gcloud compute tpus tpu-vm ssh "$TPU_NAME" \
    "${LOCATION_FLAGS[@]}" --worker="$i" --command="$(join_quoted bash "$worker" logs --run-name="$RUN_NAME")"
  [[ -n $LAST_BG_PID ]] && follower_pids+=("$LAST_BG_PID")
done
if [[ $DRY_RUN == 1 ]]; then
  echo "wait"
  exit 0
fi
log "following $NUM_WORKERS worker log(s) in $LOG_DIR/worker-*.log until the run ends"
# Stop our own followers (by pid) if this script is interrupted; the training goes on.
trap 'kill "${follower_pids[@]}" 2>/dev/null; exit 130' INT TERM
failed=0
for pid in "${follower_pids[@]}"; do wait "$pid" || failed=1; done
for ((i = 0; i < NUM_WORKERS; i++)); do
  tail -n 1 "$LOG_DIR/worker-$i.log" >&2 || true
done
((failed == 0)) || die "following a worker's log failed; see $LOG_DIR/worker-*.log"
