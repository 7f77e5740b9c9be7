#!/usr/bin/env bash
# Runs ON a TPU worker (setup.sh, launch.sh, stop.sh and babysit.sh call it through
# `gcloud compute tpus tpu-vm ssh --worker=...`); it also works on any Linux machine.
#
#   worker.sh setup  [--venv DIR] [--python-version 3.11]    venv + pip install jaxcpt[data] jax[tpu]
#   worker.sh start  [--venv DIR] --run-name NAME -- ARGS...  nohup'ed `jaxcpt ARGS...` in the checkout
#   worker.sh status --run-name NAME                         one line: jaxcpt-status host=... state=...
#                         (state: none, running, exited rc=N, preempted (saved, exited 0), dead)
#   worker.sh stop   --run-name NAME [--timeout S]           SIGTERM (checkpoint), SIGKILL after S s
#   worker.sh logs   --run-name NAME                         the log, followed until the process exits
#
# Files per run: $JAXCPT_LOGS/NAME.log (stdout+stderr), NAME.pid (process group), NAME.rc (exit
# status or `preempted`, written when the process ends). JAXCPT_LOGS defaults to ~/jaxcpt-logs, the venv
# (--venv) to JAXCPT_VENV or ~/jaxcpt-venv.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPO_ROOT=$(cd "$TPU_SCRIPTS_DIR/.." && pwd)
VENV=${JAXCPT_VENV:-$HOME/jaxcpt-venv}
PYTHON_VERSION=3.11
STOP_TIMEOUT=120
LOGS=${JAXCPT_LOGS:-$HOME/jaxcpt-logs}

usage() {  # the header comment above
  awk 'NR > 1 && /^# shellcheck/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"
}

(($# >= 1)) || die_usage "missing command: setup, start, status, stop or logs (see --help)"
ACTION=$1; shift
case $ACTION in
  -h|--help) usage; exit 0 ;;
  setup|start|status|stop|logs|_run) ;;
  *) die_usage "unknown command '$ACTION': setup, start, status, stop or logs" ;;
esac

if [[ $ACTION == _run ]]; then
  # The process-group leader of a run: keeps the exit status of the command. A TERM sent to the
  # group reaches the command too; the trap only makes this shell outlive it to record the status.
  rc_file=$1; shift
  trap 'true' TERM INT
  status=0
  "$@" || status=$?
  # `jaxcpt train` saves and exits 0 on SIGTERM (preemption); its last words tell it from the end.
  if ((status == 0)) && tail -n 5 "${rc_file%.rc}.log" | grep -q '^jaxcpt train: preempted'; then
    echo preempted >"$rc_file"
  else
    echo "$status" >"$rc_file"
  fi
  echo "=== $(date -u +%FT%TZ) exited with status $status"
  exit "$status"
fi

TRAIN_ARGS=()
while (($#)); do
  case $1 in
    --venv|--venv=*) opt_value "$@"; VENV=$REPLY; shift "$OPT_SHIFT" ;;
    --python-version|--python-version=*) opt_value "$@"; PYTHON_VERSION=$REPLY; shift "$OPT_SHIFT" ;;
    --run-name|--run-name=*) opt_value "$@"; RUN_NAME=$REPLY; shift "$OPT_SHIFT" ;;
    --timeout|--timeout=*) opt_value "$@"; STOP_TIMEOUT=$REPLY; shift "$OPT_SHIFT" ;;
    -h|--help) usage; exit 0 ;;
    --) shift; TRAIN_ARGS=("$@"); break ;;
    *) die_usage "unknown flag $1 (see --help)" ;;
  esac
done
[[ $RUN_NAME =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] || die_usage "invalid --run-name '$RUN_NAME'"
validate_positive_int "$STOP_TIMEOUT" --timeout

LOG_FILE=$LOGS/$RUN_NAME.log
PID_FILE=$LOGS/$RUN_NAME.pid
RC_FILE=$LOGS/$RUN_NAME.rc
HOST=$(hostname)

running_pid() {  # prints the pid of the live run, fails when there is none
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  # The cmdline check guards against a pid reused after a reboot.
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
    && grep -qa "worker.sh" "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

do_setup() {
  cd "$REPO_ROOT" || die "cannot enter $REPO_ROOT"
  [[ -f constraints.txt ]] || die "$REPO_ROOT/constraints.txt is missing: is $REPO_ROOT a jaxcpt checkout?"
  local want="Python $PYTHON_VERSION"
  if [[ ! -x $VENV/bin/python ]] || [[ $("$VENV/bin/python" --version 2>&1) != "$want".* ]]; then
    # TPU VM images ship an older system Python; uv fetches a standalone $PYTHON_VERSION.
    if ! python3 -m uv --version >/dev/null 2>&1; then
      log "installing uv (user site) to get Python $PYTHON_VERSION"
      if ! python3 -m pip --version >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo apt-get install -y -qq python3-pip
      fi
      python3 -m pip install --user --quiet uv
    fi
    rm -rf "$VENV"
    python3 -m uv venv --seed --python "$PYTHON_VERSION" "$VENV"
  fi
  log "installing jaxcpt[data] and jax[tpu] into $VENV (pinned by constraints.txt)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install -c constraints.txt -e ".[data]" "jax[tpu]"
  "$VENV/bin/jaxcpt" --help >/dev/null
  echo "jaxcpt-setup host=$HOST ok $("$VENV/bin/python" -c 'import jax; print("jax", jax.__version__)')"
}

do_start() {
  ((${#TRAIN_ARGS[@]})) || die_usage "missing the jaxcpt arguments after -- (e.g. -- train --gin_file=...)"
  local pid
  if pid=$(running_pid); then
    die "run '$RUN_NAME' is already running on $HOST (pid $pid); stop it first (stop.sh)"
  fi
  [[ -x $VENV/bin/jaxcpt ]] || die "$VENV/bin/jaxcpt not found on $HOST: run setup.sh first"
  mkdir -p "$LOGS"
  rm -f "$RC_FILE"
  cd "$REPO_ROOT" || die "cannot enter $REPO_ROOT"
  echo "=== $(date -u +%FT%TZ) $HOST: jaxcpt $(join_quoted "${TRAIN_ARGS[@]}")" >>"$LOG_FILE"
  # setsid: own process group (stop signals all of it) that survives the end of the ssh session.
  setsid nohup bash "$TPU_SCRIPTS_DIR/worker.sh" _run "$RC_FILE" "$VENV/bin/jaxcpt" "${TRAIN_ARGS[@]}" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  echo "$!" >"$PID_FILE"
  echo "jaxcpt-started host=$HOST run=$RUN_NAME pid=$! log=$LOG_FILE"
}

do_status() {
  local pid
  if [[ -f $RC_FILE && $(<"$RC_FILE") == preempted ]]; then
    echo "jaxcpt-status host=$HOST run=$RUN_NAME state=preempted"
  elif [[ -f $RC_FILE ]]; then
    echo "jaxcpt-status host=$HOST run=$RUN_NAME state=exited rc=$(<"$RC_FILE")"
  elif pid=$(running_pid); then
    echo "jaxcpt-status host=$HOST run=$RUN_NAME state=running pid=$pid"
  elif [[ -f $PID_FILE ]]; then
    # Started, gone, and no exit status: killed with the machine (maintenance, OOM killer, SIGKILL).
    echo "jaxcpt-status host=$HOST run=$RUN_NAME state=dead"
  else
    echo "jaxcpt-status host=$HOST run=$RUN_NAME state=none"
  fi
}

do_stop() {
  local pid waited=0
  if ! pid=$(running_pid); then
    echo "jaxcpt-stop host=$HOST run=$RUN_NAME not running"
    return 0
  fi
  # SIGTERM first: the training loop saves a checkpoint when it sees it.
  kill -TERM -- "-$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT)); do
    sleep 1; waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "jaxcpt-stop host=$HOST run=$RUN_NAME killed after ${STOP_TIMEOUT}s"
  else
    echo "jaxcpt-stop host=$HOST run=$RUN_NAME stopped after ${waited}s"
  fi
}

do_logs() {
  local pid
  [[ -f $LOG_FILE ]] || die "no log $LOG_FILE on $HOST: was run '$RUN_NAME' started?"
  if pid=$(running_pid); then
    tail -n +1 -F --pid="$pid" "$LOG_FILE"
  else
    cat "$LOG_FILE"
  fi
  do_status
}

"do_$ACTION"
