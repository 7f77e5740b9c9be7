"""tpu_scripts/: exact gcloud commands under --dry-run, the real code path against a fake `gcloud`
first on PATH (it records its argv and prints canned output), babysit's preemption recovery,
validation errors, the estimates of the README, and shellcheck (worker.sh: test_tpu_worker.py)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "tpu_scripts"
LOC = ["--project", "my-proj", "--zone", "us-central2-b", "--tpu-name", "cpt"]
FLAGS = "--project=my-proj --zone=us-central2-b"
SSH = f"gcloud compute tpus tpu-vm ssh cpt {FLAGS}"
WORKER = "bash jaxcpt/tpu_scripts/worker.sh"
TRAIN = ["--gin-file", "gin/adapt/glot.gin", "--model-dir", "gs://bkt/runs/glot"]
START = (f"{SSH} --worker=all --command=\"{WORKER} start --run-name=train -- train "
         f"--gin_file=gin/adapt/glot.gin --gin.MODEL_DIR=\\\"'gs://bkt/runs/glot'\\\"\"")

# Appends its argv as one JSON line to $FAKE_GCLOUD_LOG; answers from $FAKE_GCLOUD_RULES: the first
# rule whose "match" substrings all occur in the joined argv gives its next output (the last repeats).
FAKE_GCLOUD = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_GCLOUD_LOG"], "a") as f:
    f.write(json.dumps(argv) + "\\n")
line = " ".join(argv)
rules = os.environ.get("FAKE_GCLOUD_RULES")
for i, rule in enumerate(json.load(open(rules)) if rules else []):
    if all(m in line for m in rule["match"]):
        counter = f"{{rules}}.{{i}}"
        n = int(open(counter).read()) if os.path.exists(counter) else 0
        open(counter, "w").write(str(n + 1))
        out = rule["outputs"][min(n, len(rule["outputs"]) - 1)]
        sys.stdout.write(out.get("stdout", ""))
        sys.stderr.write(out.get("stderr", ""))
        sys.exit(out.get("rc", 0))
"""


def run_script(name, *args, env=None, cwd=None):
    return subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd or ROOT, timeout=60)


def dry(name, *args, cwd=None):
    result = run_script(name, "--dry-run", *args, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.fixture
def fake_gcloud(tmp_path):
    """Returns (env, calls(), set_rules(rules)) for running the scripts' real code path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gcloud = bin_dir / "gcloud"
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)
    log, rules = tmp_path / "gcloud.jsonl", tmp_path / "rules.json"
    rules.write_text("[]")
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_GCLOUD_LOG": str(log),
           "FAKE_GCLOUD_RULES": str(rules)}

    def calls(skip_logs=True):
        lines = log.read_text().splitlines() if log.exists() else []
        argvs = [json.loads(x) for x in lines]
        return [a for a in argvs if not (skip_logs and any(" logs --run-name" in w for w in a))]
    return env, calls, lambda r: rules.write_text(json.dumps(r))


def shell_words(text):
    """The words a POSIX shell reads from `text` (bash itself, not an imitation)."""
    out = subprocess.run(["bash", "-c", 'eval "set -- $1"; printf "%s\\0" "$@"', "_", text],
                         capture_output=True, text=True, check=True).stdout
    return out.split("\0")[:-1]


def gcloud_argvs(lines):
    """The gcloud argv lists a --dry-run listing announces (what the real run must pass)."""
    return [shell_words(x.split(" >> ")[0])[1:] for x in lines if x.startswith("gcloud ")]


def test_create_dry_run_prints_exact_commands():
    base = f"{FLAGS} --accelerator-type"
    assert dry("create.sh", *LOC, "--accelerator-type", "v4-32") == [
        f"gcloud compute tpus tpu-vm create cpt {base}=v4-32 --version=tpu-ubuntu2204-base"]
    assert dry("create.sh", *LOC, "--accelerator-type=v6e-8", "--", "--network=n", "--reserved") == [
        f"gcloud compute tpus tpu-vm create cpt {base}=v6e-8 --version=v2-alpha-tpuv6e "
        "--network=n --reserved"]
    assert dry("create.sh", *LOC, "--accelerator-type=v5p-32", "--preemptible") == [
        f"gcloud compute tpus tpu-vm create cpt {base}=v5p-32 --version=v2-alpha-tpuv5 --preemptible"]
    assert dry("create.sh", *LOC, "--accelerator-type", "v5litepod-16", "--spot") == [
        f"gcloud compute tpus queued-resources create cpt {FLAGS} --node-id=cpt "
        "--accelerator-type=v5litepod-16 --runtime-version=v2-alpha-tpuv5-lite --spot",
        f"gcloud compute tpus queued-resources describe cpt {FLAGS} --format='value(state.state)'",
        "# repeated every 30s until the state is ACTIVE"]


def test_setup_launch_stop_dry_run_print_exact_commands(tmp_path):
    logs = tmp_path / "logs"
    assert dry("setup.sh", *LOC, "--log-dir", str(logs)) == [
        f"git -C {ROOT} archive --format=tar.gz --output={logs}/jaxcpt-src.tar.gz HEAD",
        f"gcloud compute tpus tpu-vm scp {logs}/jaxcpt-src.tar.gz cpt:jaxcpt-src.tar.gz {FLAGS} "
        "--worker=all",
        f"{SSH} --worker=all --command='rm -rf jaxcpt && mkdir -p jaxcpt && tar -xzf "
        f"jaxcpt-src.tar.gz -C jaxcpt && {WORKER} setup --python-version=3.11'"]
    assert dry("setup.sh", *LOC, "--repo-url", "https://github.com/me/jaxcpt.git", "--ref", "v1") == [
        f"{SSH} --worker=all --command='rm -rf jaxcpt && git clone --quiet "
        "https://github.com/me/jaxcpt.git jaxcpt && git -C jaxcpt checkout --quiet v1 && "
        f"{WORKER} setup --python-version=3.11'"]
    assert dry("setup.sh", *LOC, "--repo-url", "u", "--sync", "gs://b/corpus=glot/corpus")[-1] == (
        f"{SSH} --worker=all --command='rm -rf jaxcpt && git clone --quiet u jaxcpt && {WORKER} "
        "setup --python-version=3.11 && mkdir -p glot/corpus && gcloud storage rsync --recursive "
        "gs://b/corpus glot/corpus'")
    assert dry("launch.sh", *LOC, "--accelerator-type", "v4-16", *TRAIN, "--log-dir", "L") == [
        START,
        f"{SSH} --worker=0 --command='{WORKER} logs --run-name=train' >> L/worker-0.log 2>&1 &",
        f"{SSH} --worker=1 --command='{WORKER} logs --run-name=train' >> L/worker-1.log 2>&1 &",
        "wait"]
    assert dry("stop.sh", *LOC) == [
        f"{SSH} --worker=all --command='{WORKER} stop --run-name=train --timeout=120'"]
    assert dry("stop.sh", *LOC, "--delete", "--skip-stop", "--spot") == [
        f"gcloud compute tpus queued-resources delete cpt {FLAGS} --force --quiet"]
    assert dry("stop.sh", *LOC, "--delete", "--timeout", "30")[1:] == [
        f"gcloud compute tpus tpu-vm delete cpt {FLAGS} --quiet"]


def test_remote_command_reaches_the_worker_shell_unchanged():
    line = dry("launch.sh", *LOC, "--num-workers", "1", *TRAIN, "--detach", "--",
               "--gin.LEARNING_RATE=1e-4", "--gin.NOTE='a b $HOME'")[0]
    command = shell_words(line)[-1].removeprefix("--command=")
    assert shell_words(command) == [
        "bash", "jaxcpt/tpu_scripts/worker.sh", "start", "--run-name=train", "--", "train",
        "--gin_file=gin/adapt/glot.gin", "--gin.MODEL_DIR='gs://bkt/runs/glot'",
        "--gin.LEARNING_RATE=1e-4", "--gin.NOTE='a b $HOME'"]


@pytest.mark.parametrize("accelerator,workers", [
    ("v4-8", 1), ("v4-32", 4), ("v5p-32", 4), ("v5litepod-8", 1), ("v5litepod-16", 4),
    ("v6e-64", 16), ("v3-32", 4)])
def test_one_log_follower_per_host(accelerator, workers):
    lines = dry("launch.sh", *LOC, "--accelerator-type", accelerator, "--follow-only")
    assert [x.split("--worker=")[1].split()[0] for x in lines[:-1]] == [str(i) for i in range(workers)]


def test_babysit_dry_run_lists_check_relaunch_and_recovery(tmp_path):
    common = [*LOC, "--accelerator-type", "v4-16", *TRAIN, "--log-dir", str(tmp_path)]
    lines = dry("babysit.sh", *common, "--interval", "60", "--create-flag=--reserved", "--",
                "--gin.X=1")
    launch = dry("launch.sh", *common, "--detach", "--", "--gin.X=1")
    follow = dry("launch.sh", *common, "--follow-only")
    assert lines == [
        f"gcloud compute tpus tpu-vm describe cpt {FLAGS} --format='value(state)'",
        "# state READY/ACTIVE: ask every worker for the state of run train",
        f"{SSH} --worker=all --command='{WORKER} status --run-name=train'",
        "# run never started, dead or failed: stop leftovers and relaunch",
        *dry("stop.sh", *common), *launch, *follow,
        "# state PREEMPTED, TERMINATED, STOPPED, SUSPENDED, FAILED or missing: delete, recreate, "
        "set up, relaunch",
        *dry("stop.sh", *common, "--delete", "--skip-stop"),
        *dry("create.sh", *common, "--poll-interval", "60", "--", "--reserved"),
        *dry("setup.sh", *common),
        *launch, *follow,
        "# then every 60s again, at most 10 recoveries/relaunches"]
    assert launch[0].endswith('--gin.X=1"')


@pytest.mark.parametrize("script,args", [
    ("create.sh", [*LOC, "--accelerator-type", "v4-8"]),
    ("create.sh", [*LOC, "--accelerator-type", "v6e-8", "--preemptible"]),
    ("setup.sh", [*LOC, "--repo-url", "https://example.org/j.git"]),
    ("launch.sh", [*LOC, "--accelerator-type", "v4-16", *TRAIN, "--detach"]),
    ("launch.sh", [*LOC, "--accelerator-type", "v4-16", *TRAIN]),
    ("stop.sh", [*LOC]),
    ("stop.sh", [*LOC, "--delete", "--queued"]),
])
def test_real_path_passes_exactly_the_printed_commands(fake_gcloud, tmp_path, script, args):
    env, calls, _ = fake_gcloud
    args = [*args, "--log-dir", str(tmp_path / "logs")]
    result = run_script(script, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert calls(skip_logs=False) == gcloud_argvs(dry(script, *args)) or (
        # followers run concurrently: same calls, any order
        sorted(map(tuple, calls(skip_logs=False))) == sorted(map(tuple, gcloud_argvs(dry(script, *args)))))


def test_launch_copies_each_workers_log_into_its_own_file(fake_gcloud, tmp_path):
    env, calls, set_rules = fake_gcloud
    set_rules([{"match": [f"--worker={i}", "worker.sh logs"],
                "outputs": [{"stdout": f"host {i}: step 10 loss 3.2\n"}]} for i in range(4)])
    logs = tmp_path / "logs"
    result = run_script("launch.sh", *LOC, "--accelerator-type", "v5p-32", *TRAIN, "--log-dir",
                        str(logs), env=env)
    assert result.returncode == 0, result.stderr
    assert calls() == [shell_words(START)[1:]]  # one start on all workers, then the 4 followers
    for i in range(4):
        assert (logs / f"worker-{i}.log").read_text() == f"host {i}: step 10 loss 3.2\n"


def test_real_setup_copies_the_committed_checkout(fake_gcloud, tmp_path):
    env, calls, _ = fake_gcloud
    src = tmp_path / "src"
    (src / "tpu_scripts").mkdir(parents=True)
    (src / "tpu_scripts" / "worker.sh").write_text("echo worker\n")
    git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    (src / "uncommitted.txt").write_text("not shipped\n")
    args = [*LOC, "--log-dir", str(tmp_path / "logs"), "--source-dir", str(src)]
    result = run_script("setup.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert calls() == gcloud_argvs(dry("setup.sh", *args))
    archive = tmp_path / "logs" / "jaxcpt-src.tar.gz"
    listing = subprocess.run(["tar", "-tzf", archive], capture_output=True, text=True, check=True)
    assert listing.stdout.split() == ["tpu_scripts/", "tpu_scripts/worker.sh"]


def test_real_spot_create_waits_until_active(fake_gcloud):
    env, calls, set_rules = fake_gcloud
    set_rules([{"match": ["queued-resources describe"],
                "outputs": [{"stdout": "WAITING_FOR_RESOURCES\n"}, {"stdout": "PROVISIONING\n"},
                            {"stdout": "ACTIVE\n"}]}])
    args = [*LOC, "--accelerator-type", "v5p-8", "--spot", "--poll-interval", "0"]
    result = run_script("create.sh", *args, env=env)
    assert result.returncode == 0, result.stderr
    create, describe = gcloud_argvs(dry("create.sh", *args))
    assert calls() == [create, describe, describe, describe]

    set_rules([{"match": ["queued-resources describe"], "outputs": [{"stdout": "FAILED\n"}]}])
    result = run_script("create.sh", *args, env=env)
    assert result.returncode == 1 and "queued resource cpt is FAILED" in result.stderr


def babysit_rules(describe, statuses):
    return [{"match": ["describe"], "outputs": describe},
            {"match": ["worker.sh status"], "outputs": [{"stdout": s} for s in statuses]}]


def status_lines(*states):
    return "".join(f"jaxcpt-status host=w{i} run=train state={s}\n" for i, s in enumerate(states))


def test_babysit_recreates_and_relaunches_after_preemption(fake_gcloud, tmp_path):
    env, calls, set_rules = fake_gcloud
    set_rules(babysit_rules(
        [{"stdout": "READY\n"}, {"stdout": "READY\n"}, {"stdout": "PREEMPTED\n"},
         {"stderr": "ERROR: (gcloud) NOT_FOUND: node cpt\n", "rc": 1}, {"stdout": "READY\n"}],
        [status_lines("none", "none"), status_lines("running", "running"),
         status_lines("exited rc=0", "exited rc=0")]))
    common = [*LOC, "--accelerator-type", "v4-16", *TRAIN, "--log-dir", str(tmp_path / "logs")]
    result = run_script("babysit.sh", *common, "--interval", "0", env=env)
    assert result.returncode == 0, result.stderr
    describe, status = gcloud_argvs(dry("babysit.sh", *common))[:2]
    stop, start = gcloud_argvs(dry("stop.sh", *common)) + gcloud_argvs(
        dry("launch.sh", *common, "--detach"))
    delete = gcloud_argvs(dry("stop.sh", *common, "--delete", "--skip-stop"))
    recreate = gcloud_argvs(dry("create.sh", *common) + dry("setup.sh", *common))
    assert calls() == [
        describe, status, stop, start,               # never started: launch
        describe, status,                            # running
        describe, *delete, *recreate, start,         # PREEMPTED: delete, create, setup, launch
        describe, *recreate, start,                  # NOT_FOUND: nothing to delete
        describe, status]                            # both workers exited 0: finished
    assert "recovery 2 of 10" in result.stderr and "finished on every worker" in result.stderr


def test_babysit_relaunches_a_preempted_run_on_a_live_tpu(fake_gcloud, tmp_path):
    # SIGTERM without losing the VM (e.g. a maintenance event): the run saved and exited 0.
    env, calls, set_rules = fake_gcloud
    set_rules(babysit_rules([{"stdout": "READY\n"}], [
        status_lines("running", "running"), status_lines("preempted", "running"),
        status_lines("preempted", "preempted"), status_lines("running", "running"),
        status_lines("exited rc=0", "exited rc=0")]))
    common = [*LOC, "--accelerator-type", "v4-16", *TRAIN, "--log-dir", str(tmp_path / "logs")]
    result = run_script("babysit.sh", *common, "--interval", "0", env=env)
    assert result.returncode == 0, result.stderr
    starts = [c for c in calls() if any("worker.sh start" in w for w in c)]
    assert len(starts) == 1
    assert "run train is preempted on cpt: recovery 1 of 10" in result.stderr
    assert "finished on every worker" in result.stderr


def test_babysit_relaunches_a_failed_run_and_gives_up_after_max_retries(fake_gcloud, tmp_path):
    env, calls, set_rules = fake_gcloud
    set_rules(babysit_rules([{"stdout": "READY\n"}], [status_lines("exited rc=1", "running")]))
    common = [*LOC, "--accelerator-type", "v4-16", *TRAIN, "--log-dir", str(tmp_path / "logs")]
    result = run_script("babysit.sh", *common, "--interval", "0", "--max-retries", "2", env=env)
    assert result.returncode == 1
    assert "giving up after 2 recoveries/relaunches (run train is failed on cpt)" in result.stderr
    starts = [c for c in calls() if any("worker.sh start" in w for w in c)]
    assert len(starts) == 2

    # A Spot queued resource stays SUSPENDED: create.sh's wait fails too, each round uses a retry.
    set_rules(babysit_rules([{"stdout": "SUSPENDED\n"}], []))
    result = run_script("babysit.sh", *common, "--spot", "--interval", "0", "--max-retries", "3",
                        env=env)
    assert result.returncode == 1 and "giving up after 3" in result.stderr
    creates = [c for c in calls() if c[:3] == ["compute", "tpus", "queued-resources"]
               and c[3] == "create"]
    assert len(creates) == 3
    assert "queued resource cpt is SUSPENDED" in result.stderr


@pytest.mark.parametrize("script,args,message", [
    ("create.sh", ["--zone", "us-central2-b", "--tpu-name", "x", "--accelerator-type", "v4-8"],
     "missing --project (or set PROJECT)"),
    ("create.sh", [*LOC], "missing --accelerator-type (or set ACCELERATOR_TYPE)"),
    ("create.sh", [*LOC, "--accelerator-type", "v4-12"], "invalid --accelerator-type 'v4-12'"),
    ("create.sh", [*LOC, "--accelerator-type", "v5litepod-12"], "invalid --accelerator-type"),
    ("create.sh", [*LOC, "--accelerator-type", "tpu-v4"], "invalid --accelerator-type 'tpu-v4'"),
    ("create.sh", [*LOC, "--accelerator-type", "v4-8", "--spot", "--preemptible"],
     "--spot and --preemptible exclude each other"),
    ("create.sh", ["--project", "p", "--zone", "us-central2-b", "--tpu-name", "x"],
     "invalid --project 'p'"),
    ("stop.sh", ["--project", "my-proj", "--zone", "central", "--tpu-name", "x"], "invalid --zone"),
    ("stop.sh", [*LOC, "--bogus"], "unknown flag --bogus"),
    ("stop.sh", [*LOC, "--timeout"], "flag --timeout needs a value"),
    ("launch.sh", [*LOC, "--accelerator-type", "v4-32", "--gin-file", "g.gin", "--model-dir",
                   "/tmp/run"], "--model-dir must be a gs:// path on a multi-host slice (4 workers)"),
    ("launch.sh", [*LOC, "--accelerator-type", "v4-8", "--model-dir", "gs://b/r"],
     "missing --gin-file"),
    ("launch.sh", [*LOC, "--gin-file", "g.gin", "--model-dir", "gs://b/r"],
     "missing --accelerator-type (or set ACCELERATOR_TYPE), or give --num-workers"),
    ("babysit.sh", [*LOC, "--accelerator-type", "v4-8", "--gin-file", "g.gin", "--model-dir",
                    "/tmp/run"], "--model-dir must be a gs:// path for babysit.sh"),
    ("setup.sh", [*LOC, "--ref", "v1"], "--ref needs --repo-url"),
    ("setup.sh", [*LOC, "--remote-dir", "../x"], "invalid --remote-dir '../x'"),
    ("setup.sh", [*LOC, "--sync", "gs://b/c=/abs"], "invalid --sync 'gs://b/c=/abs'"),
])
def test_validation_errors_exit_2_with_one_line(fake_gcloud, script, args, message):
    env, calls, _ = fake_gcloud
    result = run_script(script, *args, env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stderr.startswith(f"{script}: error: ")
    assert calls() == []


def test_env_vars_stand_in_for_flags():
    env = {"PROJECT": "my-proj", "ZONE": "us-central2-b", "TPU_NAME": "cpt",
           "ACCELERATOR_TYPE": "v4-8", "SPOT": "1"}
    result = run_script("create.sh", "--dry-run", env=env)
    assert result.stdout.splitlines()[0] == (
        f"gcloud compute tpus queued-resources create cpt {FLAGS} --node-id=cpt "
        "--accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base --spot")


@pytest.mark.parametrize("script", ["create.sh", "setup.sh", "launch.sh", "babysit.sh", "stop.sh",
                                    "worker.sh"])
def test_help(script):
    result = run_script(script, "--help")
    assert result.returncode == 0 and ("Usage" in result.stdout or "worker.sh setup" in result.stdout)


def test_estimates_match_published_sizes_and_the_readme():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import estimate
    finally:
        sys.path.remove(str(SCRIPTS))
    # Published totals (HF model cards): the estimate counts matrices only (no biases/LayerNorms).
    for model, published in (("xlmr-base", 278e6), ("xlmr-large", 560e6), ("mt5-base", 580e6)):
        assert abs(estimate.MODELS[model].total_params() / published - 1) < 0.01
    assert estimate.MODELS["xlmr-base"].embedding_params() == 250_002 * 768
    e = estimate.estimate("xlmr-base", "v4-8", mfu=0.5)
    # independent arithmetic: 6 * 84.93M dense + 6 * 768 * 250002 * 0.15 vocab + 12*12*512*768 attention
    flops_per_token = 6 * 84_934_656 + 6 * 768 * 250_002 * 0.15 + 12 * 12 * 512 * 768
    assert e["chips"] == 4 and e["tokens_per_s_chip"] == pytest.approx(0.5 * 275e12 / flops_per_token)
    assert e["state_gib_chip"] == pytest.approx(16 * 276_936_192 / 4 / 2**30)
    assert estimate.chips_in("v5litepod-16")[1] == 16 and estimate.chips_in("v5p-32")[1] == 16
    assert estimate.markdown_table() in (SCRIPTS / "README.md").read_text()


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed (apt-get install -y shellcheck); the TPU scripts "
                    "must be checked")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    assert len(scripts) == 7
    result = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=SCRIPTS)
    assert result.returncode == 0, result.stdout
