# shellcheck shell=bash disable=SC2034  # (variables here are read by the scripts that source it)
# Sourced by every tpu_scripts/*.sh: flag parsing, validation, and `run` (print the exact command,
# then execute it unless --dry-run). Every flag also has an environment variable of the same meaning
# (--project / PROJECT, --tpu-name / TPU_NAME, ...); a flag wins over the variable.

set -euo pipefail

SCRIPT_NAME=$(basename "$0")
TPU_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

PROJECT=${PROJECT:-}
ZONE=${ZONE:-}
TPU_NAME=${TPU_NAME:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-}
RUNTIME_VERSION=${RUNTIME_VERSION:-}
NUM_WORKERS=${NUM_WORKERS:-}
SPOT=${SPOT:-0}
QUEUED=${QUEUED:-0}
PREEMPTIBLE=${PREEMPTIBLE:-0}
MODEL_DIR=${MODEL_DIR:-}
# One gin file, or several separated by commas; --gin-file may be repeated.
GIN_FILE=${GIN_FILE:-}
RUN_NAME=${RUN_NAME:-train}
# The checkout on every worker, relative to the remote home directory.
REMOTE_DIR=${REMOTE_DIR:-jaxcpt}
LOG_DIR=${LOG_DIR:-}
DRY_RUN=${DRY_RUN:-0}
GIN_FILES=()

COMMON_FLAGS_HELP="Common flags (all scripts accept all of them, so one set can be shared; env var in brackets):
  --project ID             Google Cloud project [PROJECT]
  --zone ZONE              e.g. us-central2-b [ZONE]
  --tpu-name NAME          TPU VM / pod slice name, also the queued-resource id [TPU_NAME]
  --accelerator-type TYPE  v4-8, v4-32, v5litepod-16, v5p-32, v6e-8 ... [ACCELERATOR_TYPE]
  --runtime-version V      default by generation: tpu-ubuntu2204-base (v2-v4), v2-alpha-tpuv5-lite
                           (v5e), v2-alpha-tpuv5 (v5p), v2-alpha-tpuv6e (v6e) [RUNTIME_VERSION]
  --num-workers N          hosts in the slice (default: derived from the accelerator type) [NUM_WORKERS]
  --spot                   Spot capacity, requested through a queued resource [SPOT=1]
  --queued                 on-demand capacity through a queued resource [QUEUED=1]
  --preemptible            legacy preemptible TPU VM (tpu-vm create --preemptible) [PREEMPTIBLE=1]
  --model-dir DIR          training output dir; gs://... (required on multi-host slices) [MODEL_DIR]
  --gin-file FILE          gin file relative to the repo root, repeatable [GIN_FILE, comma-separated]
  --run-name NAME          name of the training process on the workers (default train) [RUN_NAME]
  --remote-dir DIR         checkout on the workers, relative to their home (default jaxcpt) [REMOTE_DIR]
  --log-dir DIR            local directory for per-worker logs (default tpu_logs/TPU_NAME) [LOG_DIR]
  --dry-run                print every command, exactly, one per line, and execute none [DRY_RUN=1]
  -h, --help               this help"

# Usage errors: one line naming the problem, exit status 2.
die_usage() { echo "$SCRIPT_NAME: error: $*" >&2; exit 2; }
# Runtime failures (a gcloud call failed, a resource never became ready): exit status 1.
die() { echo "$SCRIPT_NAME: error: $*" >&2; exit 1; }
log() { echo "[$SCRIPT_NAME $(date -u +%H:%M:%S)] $*" >&2; }

# Quote one word so that a POSIX shell reads it back unchanged; plain words stay bare, and a
# --flag=value keeps its flag outside the quotes (--command='...').
quote_word() {
  local word=$1
  if [[ $word =~ ^(--[A-Za-z0-9_.-]+=)(.*[^A-Za-z0-9_./:=,@%+-].*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"
    quote_word "${BASH_REMATCH[2]}"
  elif [[ -n $word && $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$word"
  elif [[ $word != *"'"* ]]; then
    printf "'%s'" "$word"
  elif [[ $word != *!* ]]; then
    word=${word//\\/\\\\}; word=${word//\"/\\\"}; word=${word//\$/\\\$}; word=${word//\`/\\\`}
    printf '"%s"' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# All arguments, quoted and joined by single spaces: one line a shell can execute as is.
join_quoted() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote_word "$word")"
  done
  printf '%s' "$out"
}

# Print the command (stdout under --dry-run, "+ command" on stderr otherwise) and execute it
# unless --dry-run.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    join_quoted "$@"; echo
    return 0
  fi
  echo "+ $(join_quoted "$@")" >&2
  "$@"
}

# Like run, appending the command's stdout and stderr to a file, in the background. The PID is left in
# $LAST_BG_PID (empty under --dry-run).
run_background_logged() {
  local logfile=$1; shift
  LAST_BG_PID=""
  if [[ $DRY_RUN == 1 ]]; then
    echo "$(join_quoted "$@") >> $(quote_word "$logfile") 2>&1 &"
    return 0
  fi
  echo "+ $(join_quoted "$@") >> $(quote_word "$logfile") 2>&1 &" >&2
  "$@" >>"$logfile" 2>&1 &
  LAST_BG_PID=$!
}

# Print a note into the --dry-run listing (a shell comment, so the listing stays executable).
dry_note() {
  if [[ $DRY_RUN == 1 ]]; then echo "# $*"; fi
}

# Read a flag value from "--flag=value" or "--flag value"; sets REPLY and OPT_SHIFT.
opt_value() {
  if [[ $1 == *=* ]]; then
    REPLY=${1#*=}; OPT_SHIFT=1
  elif (($# < 2)); then
    die_usage "flag $1 needs a value"
  else
    REPLY=$2; OPT_SHIFT=2
  fi
}

# Handle one common flag at the front of "$@". Returns 1 when the flag is not a common one.
parse_common_flag() {
  OPT_SHIFT=1
  case $1 in
    --project|--project=*) opt_value "$@"; PROJECT=$REPLY ;;
    --zone|--zone=*) opt_value "$@"; ZONE=$REPLY ;;
    --tpu-name|--tpu-name=*|--name|--name=*) opt_value "$@"; TPU_NAME=$REPLY ;;
    --accelerator-type|--accelerator-type=*) opt_value "$@"; ACCELERATOR_TYPE=$REPLY ;;
    --runtime-version|--runtime-version=*) opt_value "$@"; RUNTIME_VERSION=$REPLY ;;
    --num-workers|--num-workers=*) opt_value "$@"; NUM_WORKERS=$REPLY ;;
    --model-dir|--model-dir=*) opt_value "$@"; MODEL_DIR=$REPLY ;;
    --gin-file|--gin-file=*) opt_value "$@"; GIN_FILES+=("$REPLY") ;;
    --run-name|--run-name=*) opt_value "$@"; RUN_NAME=$REPLY ;;
    --remote-dir|--remote-dir=*) opt_value "$@"; REMOTE_DIR=$REPLY ;;
    --log-dir|--log-dir=*) opt_value "$@"; LOG_DIR=$REPLY ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --preemptible) PREEMPTIBLE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# The common flags as parsed, for handing them on to another script (babysit.sh does).
common_args() {
  COMMON_ARGS=(--project="$PROJECT" --zone="$ZONE" --tpu-name="$TPU_NAME")
  [[ -n $ACCELERATOR_TYPE ]] && COMMON_ARGS+=(--accelerator-type="$ACCELERATOR_TYPE")
  [[ -n $RUNTIME_VERSION ]] && COMMON_ARGS+=(--runtime-version="$RUNTIME_VERSION")
  [[ -n $NUM_WORKERS ]] && COMMON_ARGS+=(--num-workers="$NUM_WORKERS")
  [[ $SPOT == 1 ]] && COMMON_ARGS+=(--spot)
  [[ $QUEUED == 1 ]] && COMMON_ARGS+=(--queued)
  [[ $PREEMPTIBLE == 1 ]] && COMMON_ARGS+=(--preemptible)
  [[ -n $MODEL_DIR ]] && COMMON_ARGS+=(--model-dir="$MODEL_DIR")
  local gin
  for gin in "${GIN_FILES[@]}"; do COMMON_ARGS+=(--gin-file="$gin"); done
  COMMON_ARGS+=(--run-name="$RUN_NAME" --remote-dir="$REMOTE_DIR" --log-dir="$LOG_DIR")
  [[ $DRY_RUN == 1 ]] && COMMON_ARGS+=(--dry-run)
  return 0
}

# Fill defaults that depend on other values; call once after parsing.
finish_common_flags() {
  if ((${#GIN_FILES[@]} == 0)) && [[ -n $GIN_FILE ]]; then
    IFS=, read -r -a GIN_FILES <<<"$GIN_FILE"
  fi
  if [[ -z $LOG_DIR ]]; then LOG_DIR=tpu_logs/${TPU_NAME:-unnamed}; fi
  if [[ $SPOT == 1 ]]; then QUEUED=1; fi
  if [[ $SPOT == 1 && $PREEMPTIBLE == 1 ]]; then
    die_usage "--spot and --preemptible exclude each other (Spot is the successor of preemptible)"
  fi
  if [[ $QUEUED == 1 && $PREEMPTIBLE == 1 ]]; then
    die_usage "--preemptible cannot be used with --queued; use --spot"
  fi
  return 0
}

require() {  # require VALUE FLAG ENV
  [[ -n $1 ]] || die_usage "missing $2 (or set $3)"
}

validate_location() {
  require "$PROJECT" --project PROJECT
  require "$ZONE" --zone ZONE
  require "$TPU_NAME" --tpu-name TPU_NAME
  [[ $PROJECT =~ ^([a-z][-a-z0-9.]*:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$ ]] \
    || die_usage "invalid --project '$PROJECT': expected a project id like my-project-123"
  [[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] \
    || die_usage "invalid --zone '$ZONE': expected a zone like us-central2-b"
  [[ $TPU_NAME =~ ^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
    || die_usage "invalid --tpu-name '$TPU_NAME': lowercase letters, digits and '-', starting with a letter"
  [[ $REMOTE_DIR =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$ ]] \
    || die_usage "invalid --remote-dir '$REMOTE_DIR': a relative path without '..' (the workers' home is the base)"
  [[ $RUN_NAME =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*$ ]] \
    || die_usage "invalid --run-name '$RUN_NAME': letters, digits, '_', '.', '-'"
}

# Accelerator types: v2/v3/v4/v5p-N count TensorCores (N a multiple of 8 = whole hosts);
# v5litepod/v6e-N count chips.
validate_accelerator_type() {
  require "$ACCELERATOR_TYPE" --accelerator-type ACCELERATOR_TYPE
  local expected="expected v2-N, v3-N, v4-N, v5p-N (N TensorCores, a multiple of 8) or"
  expected+=" v5litepod-N, v6e-N (N chips: 1, 4, 8, 16, 32, 64, 128, 256)"
  [[ $ACCELERATOR_TYPE =~ ^(v2|v3|v4|v5p|v5litepod|v6e)-([0-9]+)$ ]] \
    || die_usage "invalid --accelerator-type '$ACCELERATOR_TYPE': $expected"
  local generation=${BASH_REMATCH[1]} size=$((10#${BASH_REMATCH[2]}))
  case $generation in
    v5litepod|v6e)
      [[ " 1 4 8 16 32 64 128 256 " == *" $size "* ]] \
        || die_usage "invalid --accelerator-type '$ACCELERATOR_TYPE': $expected" ;;
    *)
      ((size >= 8 && size % 8 == 0)) \
        || die_usage "invalid --accelerator-type '$ACCELERATOR_TYPE': $expected" ;;
  esac
  if [[ -z $RUNTIME_VERSION ]]; then
    case $generation in
      v5litepod) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
      v5p) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
      v6e) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
      *) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    esac
  fi
}

# Hosts (= ssh workers) of a slice: 4 chips per host (v4, v5p: 8 TensorCores; v2/v3: 8 cores);
# v5e/v6e slices up to 8 chips are one host, larger ones have 4 chips per host.
workers_for_accelerator() {
  local generation=${1%-*} size=${1##*-}
  case $generation in
    v5litepod|v6e) if ((size <= 8)); then echo 1; else echo $((size / 4)); fi ;;
    *) echo $((size / 8)) ;;
  esac
}

# Sets NUM_WORKERS from --num-workers or the accelerator type.
resolve_num_workers() {
  if [[ -n $NUM_WORKERS ]]; then
    [[ $NUM_WORKERS =~ ^[1-9][0-9]*$ ]] || die_usage "invalid --num-workers '$NUM_WORKERS': a positive integer"
    return 0
  fi
  [[ -n $ACCELERATOR_TYPE ]] \
    || die_usage "missing --accelerator-type (or set ACCELERATOR_TYPE), or give --num-workers"
  validate_accelerator_type
  NUM_WORKERS=$(workers_for_accelerator "$ACCELERATOR_TYPE")
}

# MODEL_DIR must be shared by every host (and survive a preemption), so gs:// on multi-host slices.
validate_model_dir() {
  require "$MODEL_DIR" --model-dir MODEL_DIR
  if ((NUM_WORKERS > 1)) && [[ $MODEL_DIR != gs://?* ]]; then
    die_usage "--model-dir must be a gs:// path on a multi-host slice ($NUM_WORKERS workers), got '$MODEL_DIR'"
  fi
}

validate_positive_int() {  # VALUE FLAG
  [[ $1 =~ ^[0-9]+$ ]] || die_usage "invalid $2 '$1': a non-negative integer"
}

# The gcloud flags that locate the TPU, in the order every script uses.
location_flags() {
  LOCATION_FLAGS=(--project="$PROJECT" --zone="$ZONE")
}

# Run a shell command line on workers of the slice ("all", "0", "1,3"); build the line with
# join_quoted so every word reaches the remote shell unchanged.
ssh_workers() {
  location_flags
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION_FLAGS[@]}" --worker="$1" --command="$2"
}

# The worker-side helper, as seen from the workers' home directory.
worker_script() {
  echo "$REMOTE_DIR/tpu_scripts/worker.sh"
}
