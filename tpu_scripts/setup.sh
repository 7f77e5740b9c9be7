#!/usr/bin/env bash
# Install jaxcpt on every worker of a TPU VM / pod slice: put the source in ~/REMOTE_DIR (a `git
# archive` of the local checkout's HEAD copied with `tpu-vm scp --worker=all`, or `git clone
# --repo-url`), then `worker.sh setup` on all workers: a Python 3.11 venv (~/jaxcpt-venv) with
# `pip install -c constraints.txt -e .[data] jax[tpu]`. --sync gs://SRC=DIR also copies GCS data
# (corpus, initialised checkpoint) to DIR on every worker with `gcloud storage rsync --recursive`.
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

REPO_URL=${REPO_URL:-}
REPO_REF=${REPO_REF:-}
SOURCE_DIR=${SOURCE_DIR:-$(cd "$TPU_SCRIPTS_DIR/.." && pwd)}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
SYNCS=()

usage() {
  cat <<EOF
Usage: $SCRIPT_NAME --project ID --zone ZONE --tpu-name NAME [--repo-url URL [--ref REF]] [flags]

Copies jaxcpt to every worker and installs it (venv ~/jaxcpt-venv, Python $PYTHON_VERSION via uv,
pip install -c constraints.txt -e .[data] jax[tpu]). By default the committed HEAD of the local
checkout is copied (uncommitted changes are not: commit them, or they are missing on the workers).

Flags of this script:
  --repo-url URL        clone this git repository on the workers instead of copying [REPO_URL]
  --ref REF             branch, tag or commit to check out after cloning [REPO_REF]
  --source-dir DIR      local checkout to copy (default: the one holding this script) [SOURCE_DIR]
  --python-version V    Python of the workers' venv (default 3.11) [PYTHON_VERSION]
  --sync gs://SRC=DIR   after installing, copy a GCS prefix to DIR (relative to the workers' home)
                        on every worker with gcloud storage rsync --recursive; repeatable

$COMMON_FLAGS_HELP
EOF
}

while (($#)); do
  if parse_common_flag "$@"; then shift "$OPT_SHIFT"; continue; fi
  case $1 in
    --repo-url|--repo-url=*) opt_value "$@"; REPO_URL=$REPLY; shift "$OPT_SHIFT" ;;
    --ref|--ref=*) opt_value "$@"; REPO_REF=$REPLY; shift "$OPT_SHIFT" ;;
    --source-dir|--source-dir=*) opt_value "$@"; SOURCE_DIR=$REPLY; shift "$OPT_SHIFT" ;;
    --python-version|--python-version=*) opt_value "$@"; PYTHON_VERSION=$REPLY; shift "$OPT_SHIFT" ;;
    --sync|--sync=*) opt_value "$@"; SYNCS+=("$REPLY"); shift "$OPT_SHIFT" ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown flag $1 (see --help)" ;;
  esac
done
finish_common_flags
validate_location
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die_usage "invalid --python-version '$PYTHON_VERSION': e.g. 3.11"
[[ -z $REPO_REF || -n $REPO_URL ]] || die_usage "--ref needs --repo-url (a copied checkout is always its HEAD)"

install=(bash "$(worker_script)" setup --python-version="$PYTHON_VERSION")
install_line=$(join_quoted "${install[@]}")
for sync in "${SYNCS[@]}"; do
  [[ $sync =~ ^(gs://[^=]+)=([A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)$ ]] \
    || die_usage "invalid --sync '$sync': expected gs://BUCKET/PREFIX=DIR, DIR relative without '..'"
  source_uri=${BASH_REMATCH[1]} target_dir=${BASH_REMATCH[2]}
  install_line+=" && mkdir -p $(quote_word "$target_dir")"
  install_line+=" && gcloud storage rsync --recursive $(join_quoted "$source_uri" "$target_dir")"
done

if [[ -n $REPO_URL ]]; then
  fetch="rm -rf $(quote_word "$REMOTE_DIR") && git clone --quiet $(join_quoted "$REPO_URL" "$REMOTE_DIR")"
  if [[ -n $REPO_REF ]]; then
    fetch+=" && git -C $(join_quoted "$REMOTE_DIR") checkout --quiet $(join_quoted "$REPO_REF")"
  fi
  ssh_workers all "$fetch && $install_line"
  exit 0
fi

git -C "$SOURCE_DIR" rev-parse --git-dir >/dev/null 2>&1 \
  || die_usage "--source-dir '$SOURCE_DIR' is not a git checkout (or give --repo-url)"
if [[ -n $(git -C "$SOURCE_DIR" status --porcelain --untracked-files=no) ]]; then
  log "warning: $SOURCE_DIR has uncommitted changes; the workers get its HEAD without them"
fi
# Absolute, because `git -C` runs in SOURCE_DIR.
case $LOG_DIR in /*) archive=$LOG_DIR/jaxcpt-src.tar.gz ;; *) archive=$PWD/$LOG_DIR/jaxcpt-src.tar.gz ;; esac
remote_archive=$REMOTE_DIR-src.tar.gz
[[ $DRY_RUN == 1 ]] || mkdir -p "$LOG_DIR"
run git -C "$SOURCE_DIR" archive --format=tar.gz --output="$archive" HEAD
location_flags
run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:$remote_archive" "${LOCATION_FLAGS[@]}" --worker=all
dir=$(quote_word "$REMOTE_DIR")
unpack="rm -rf $dir && mkdir -p $dir && tar -xzf $(quote_word "$remote_archive") -C $dir"
ssh_workers all "$unpack && $install_line"
