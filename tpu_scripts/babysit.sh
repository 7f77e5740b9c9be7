#!/usr/bin/env bash
# Keep a training run alive on preemptible / Spot capacity. Every --interval seconds: read the TPU
# state (tpu-vm describe, or queued-resources describe with --spot / --queued).
#   READY / ACTIVE: ask every worker for the run's state (worker.sh status): running -> nothing;
#     all exited 0 -> finished (exit 0); never started -> launch; preempted (SIGTERM: saved and
#     exited 0 without finishing), dead or failed -> stop leftovers, relaunch.
#   PREEMPTED, TERMINATED, STOPPED, SUSPENDED, FAILED or missing: delete, create.sh, setup.sh,
#     launch.sh. Training resumes from the latest checkpoint in MODEL_DIR (gs://).
#   anything else (CREATING, WAITING_FOR_RESOURCES, REPAIRING, ...): wait.
# Recoveries and relaunches are bounded by --max-retries; then it exits 1.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

MAX_RETRIES=${MAX_RETRIES:-10}
INTERVAL=${INTERVAL:-300}
DELETE_WHEN_DONE=0
SETUP_ARGS=()
CREATE_FLAGS=()
EXTRA_ARGS=()

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME --project ID --zone ZONE --tpu-name NAME --accelerator-type TYPE \\
         --gin-file gin/adapt/NAME.gin --model-dir gs://BUCKET/RUN [--spot] [flags] [-- EXTRA...]

Watches the TPU and the run; on preemption deletes, recreates, sets up and relaunches (the run
resumes from MODEL_DIR). EXTRA are passed to \`jaxcpt train\` (see launch.sh). Leave it running in
tmux / screen / nohup on a machine with gcloud; stop it before stopping the run with stop.sh.

Flags of this script:
  --max-retries N       recoveries + relaunches before giving up (default 10) [MAX_RETRIES]
  --interval S          seconds between checks (default 300) [INTERVAL]
  --delete-when-done    delete the TPU when every worker's run exited with status 0
  --create-flag FLAG    extra flag for the gcloud create command (see create.sh), repeatable
  --repo-url, --ref, --source-dir, --python-version, --sync   passed to setup.sh

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  if parse_common_flag "$@"; then shift "$OPT_SHIFT"; continue; fi
  case $1 in
    --max-retries|--max-retries=*) opt_value "$@"; MAX_RETRIES=$REPLY; shift "$OPT_SHIFT" ;;
    --interval|--interval=*) opt_value "$@"; INTERVAL=$REPLY; shift "$OPT_SHIFT" ;;
    --delete-when-done) DELETE_WHEN_DONE=1; shift ;;
    --create-flag|--create-flag=*) opt_value "$@"; CREATE_FLAGS+=("$REPLY"); shift "$OPT_SHIFT" ;;
    --repo-url|--repo-url=*|--ref|--ref=*|--source-dir|--source-dir=*|--sync|--sync=*|\
      --python-version|--python-version=*)
      flag=${1%%=*}; opt_value "$@"; SETUP_ARGS+=("$flag=$REPLY"); shift "$OPT_SHIFT" ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA_ARGS=("$@"); break ;;
    *) die_usage "unknown flag $1 (see --help)" ;;
  esac
done
finish_common_flags
validate_location
validate_accelerator_type
resolve_num_workers
validate_model_dir
[[ $MODEL_DIR == gs://?* ]] \
  || die_usage "--model-dir must be a gs:// path for babysit.sh: a recreated TPU starts with an empty" \
       "disk, got '$MODEL_DIR'"
((${#GIN_FILES[@]})) || die_usage "missing --gin-file (or set GIN_FILE), e.g. gin/adapt/NAME.gin"
validate_positive_int "$MAX_RETRIES" --max-retries
validate_positive_int "$INTERVAL" --interval

common_args
EXTRA=()
((${#EXTRA_ARGS[@]})) && EXTRA=(-- "${EXTRA_ARGS[@]}")
SETUP=("$TPU_SCRIPTS_DIR/setup.sh" "${COMMON_ARGS[@]}")
((${#SETUP_ARGS[@]})) && SETUP+=("${SETUP_ARGS[@]}")
location_flags
if [[ $QUEUED == 1 ]]; then
  DESCRIBE=(gcloud compute tpus queued-resources describe "$TPU_NAME" "${LOCATION_FLAGS[@]}"
    --format="value(state.state)")
else
  DESCRIBE=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOCATION_FLAGS[@]}" --format="value(state)")
fi
STATUS_COMMAND=$(join_quoted bash "$(worker_script)" status --run-name="$RUN_NAME")

FOLLOWER_PID=""
start_follower() {  # local per-worker logs, in the background; one follower at a time
  if [[ $DRY_RUN == 1 ]]; then
    "$TPU_SCRIPTS_DIR/launch.sh" "${COMMON_ARGS[@]}" --follow-only
    return
  fi
  stop_follower
  "$TPU_SCRIPTS_DIR/launch.sh" "${COMMON_ARGS[@]}" --follow-only &
  FOLLOWER_PID=$!
}
stop_follower() {
  if [[ -n $FOLLOWER_PID ]]; then kill "$FOLLOWER_PID" 2>/dev/null || true; FOLLOWER_PID=""; fi
}

relaunch() {  # stop leftovers (a hung collective on the other workers), start again
  "$TPU_SCRIPTS_DIR/stop.sh" "${COMMON_ARGS[@]}" &&
    "$TPU_SCRIPTS_DIR/launch.sh" "${COMMON_ARGS[@]}" --detach "${EXTRA[@]}" && start_follower
}

recreate() {  # $1: the TPU state; a missing TPU has nothing to delete
  if [[ $1 != MISSING ]]; then
    "$TPU_SCRIPTS_DIR/stop.sh" "${COMMON_ARGS[@]}" --delete --skip-stop || return 1
  fi
  "$TPU_SCRIPTS_DIR/create.sh" "${COMMON_ARGS[@]}" --poll-interval="$INTERVAL" -- "${CREATE_FLAGS[@]}" &&
    "${SETUP[@]}" &&
    "$TPU_SCRIPTS_DIR/launch.sh" "${COMMON_ARGS[@]}" --detach "${EXTRA[@]}" && start_follower
}

if [[ $DRY_RUN == 1 ]]; then
  run "${DESCRIBE[@]}"
  dry_note "state READY/ACTIVE: ask every worker for the state of run $RUN_NAME"
  ssh_workers all "$STATUS_COMMAND"
  dry_note "run never started, dead or failed: stop leftovers and relaunch"
  relaunch
  dry_note "state PREEMPTED, TERMINATED, STOPPED, SUSPENDED, FAILED or missing: delete, recreate, set up, relaunch"
  recreate PREEMPTED
  dry_note "then every ${INTERVAL}s again, at most $MAX_RETRIES recoveries/relaunches"
  exit 0
fi


tpu_state() {  # sets STATE: the describe value, MISSING, or UNKNOWN when describe itself failed
  local err rc=0
  err=$(mktemp)
  STATE=$(run "${DESCRIBE[@]}" 2>"$err") || rc=$?
  if ((rc != 0)); then
    if grep -qiE 'NOT_FOUND|not found' "$err"; then STATE=MISSING; else STATE=UNKNOWN; fi
    sed 's/^/  gcloud: /' "$err" >&2
  fi
  rm -f "$err"
  STATE=${STATE:-UNKNOWN}
}

training_state() {  # sets TRAINING: running, finished, none, preempted, failed or unknown
  local out total running ok exited dead none preempted
  if ! out=$(ssh_workers all "$STATUS_COMMAND"); then TRAINING=unknown; return 0; fi
  total=$(grep -c 'jaxcpt-status ' <<<"$out" || true)
  running=$(grep -c 'state=running' <<<"$out" || true)
  ok=$(grep -cE 'state=exited rc=0$' <<<"$out" || true)
  exited=$(grep -c 'state=exited' <<<"$out" || true)
  dead=$(grep -c 'state=dead' <<<"$out" || true)
  none=$(grep -c 'state=none' <<<"$out" || true)
  preempted=$(grep -c 'state=preempted' <<<"$out" || true)
  if ((total < NUM_WORKERS)); then TRAINING=unknown
  elif ((dead > 0 || exited > ok)); then TRAINING=failed
  elif ((preempted > 0 && running == 0)); then TRAINING=preempted
  elif ((ok == total)); then TRAINING=finished
  elif ((none == total)); then TRAINING=none
  elif ((running > 0 && none == 0)); then TRAINING=running
  else TRAINING=failed
  fi
}

retries=0
launched=0
use_retry() {  # $1: why
  if ((retries >= MAX_RETRIES)); then
    die "giving up after $MAX_RETRIES recoveries/relaunches ($1)"
  fi
  retries=$((retries + 1))
  log "$1: recovery $retries of $MAX_RETRIES"
}

while true; do
  tpu_state
  case $STATE in
    READY|ACTIVE)
      training_state
      case $TRAINING in
        running) log "$TPU_NAME $STATE, run $RUN_NAME running on $NUM_WORKERS worker(s)" ;;
        finished)
          log "run $RUN_NAME finished on every worker"
          if [[ $DELETE_WHEN_DONE == 1 ]]; then
            "$TPU_SCRIPTS_DIR/stop.sh" "${COMMON_ARGS[@]}" --delete --skip-stop
          fi
          exit 0 ;;
        none|preempted|failed)
          if [[ $TRAINING == none && $launched == 0 ]]; then
            log "run $RUN_NAME not started on $TPU_NAME yet: launching"
          else
            use_retry "run $RUN_NAME is $TRAINING on $TPU_NAME"
          fi
          launched=1
          relaunch || log "relaunch failed; trying again after the next check" ;;
        *) log "could not read the run's state from every worker; next check in ${INTERVAL}s" ;;
      esac ;;
    PREEMPTED|TERMINATED|STOPPED|SUSPENDED|FAILED|MISSING)
      use_retry "$TPU_NAME is $STATE"
      launched=1
      stop_follower
      recreate "$STATE" || log "recreating $TPU_NAME failed; trying again after the next check" ;;
    *) log "$TPU_NAME is $STATE; waiting" ;;
  esac
  sleep "$INTERVAL"
done
