"""Sweeps across machines on a real PostgreSQL server: a throw-away cluster (Debian's server binaries,
initdb + pg_ctl on a free port), two sweep workers started with the identical command against one
study, a worker SIGKILLed mid-trial whose trial another worker re-runs, optuna-dashboard reading
the study over HTTP, and a missing driver as one error line.

Skips where the server binaries are absent, except under CI=true (.ci/run installs them), where
that is a failure."""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, make_image_folder
from test_sweep import RECIPE, tiny, wait_for, write

from trainkit.config.schema import RecipeError
from trainkit.sweep.study import budget_left_for, counted, is_surplus, open_storage, sampler_seed

SPACE = "optim.lr: {loguniform: [0.01, 0.5]}\n"


def pg_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[-1:]), None)
    return Path(found).resolve().parent if found else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres (or nobody) user."""
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return ["runuser", "-u", user, "--"]
        except KeyError:
            continue
    pytest.fail("running as root with neither a postgres nor a nobody user to run the server as")


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL cluster on 127.0.0.1:<free port>; yields a SQLAlchemy URL of its database."""
    reason = None
    try:
        import psycopg  # noqa: F401 -- the driver the sweep's postgresql:// URL needs
    except ImportError:
        reason = "psycopg is not installed (pip install 'psycopg[binary]', in requirements.txt)"
    bindir = pg_bin()
    if bindir is None:
        reason = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true: {reason} (.ci/run installs them)")
        pytest.skip(reason)
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as another user.
    base = Path(tempfile.mkdtemp(prefix="trainkit-pg-"))
    os.chmod(base, 0o755)
    run_as = as_server_user()
    if run_as:
        shutil.chown(base, run_as[2])
    data, port = base / "data", free_port()
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "trainkit", "--no-sync",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-o", options,
                    "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=120)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="trainkit", dbname="postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE sweeps")
        yield f"postgresql://trainkit@127.0.0.1:{port}/sweeps"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("pgsweep") / "folder", per_class=(40, 10))


def sweep_cmd(folder: Path, space: Path, out: Path, url: str, study: str, trials: int, *extra) -> list[str]:
    """The one command every worker runs (1 epoch of smallcnn at 16 px per trial)."""
    return [sys.executable, "sweep.py", RECIPE, *tiny(folder, 1), "--space", str(space), "--trials", str(trials),
            "--pruner", "none", "--storage", url, "--study", study, "--out", str(out), *map(str, extra)]


def other_host(cmd: list[str], name: str) -> list[str]:
    """``cmd`` run under another host name (a UTS namespace), so that the sweeps look like two machines:
    a dead one's trial is then found by its heartbeat, not by its pid. Plain ``cmd`` where unshare is refused."""
    probe = subprocess.run(["unshare", "-u", "true"], capture_output=True, check=False) if shutil.which("unshare") \
        else None
    if probe is None or probe.returncode != 0:
        return cmd
    return ["unshare", "-u", "sh", "-c", 'hostname "$0" && exec "$@"', name, *cmd]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def finish(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            proc.kill()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_two_workers_with_the_same_command_share_one_study_exactly(postgres_url, folder, tmp_path):
    space = write(tmp_path / "space.yaml", SPACE)
    cmd = sweep_cmd(folder, space, tmp_path / "out", postgres_url, "shared", 4)
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    start_s = time.monotonic()
    procs = [start(cmd, log) for log in logs]           # the identical command, twice, at once
    finish(procs, logs, 300)
    took = time.monotonic() - start_s
    trials = optuna.load_study(study_name="shared", storage=postgres_url).get_trials()
    run = [t for t in trials if not is_surplus(t)]
    assert counted(trials) == 4 and len(run) == 4, [(t.number, t.state.name) for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in run), [t.user_attrs.get("error") for t in run]
    params = [t.params["optim.lr"] for t in run]
    assert len(set(params)) == 4, params                       # no parameter set twice
    assert len({t.user_attrs["sweep_pid"] for t in run}) == 2  # both workers trained
    seeds = [next(ln for ln in log.read_text().splitlines() if "sampler seed" in ln) for log in logs]
    assert seeds[0].split("sampler seed")[1] != seeds[1].split("sampler seed")[1], seeds
    print(f"postgres sweep: 2 workers, 4 trials, {len(trials) - 4} surplus, {took:.0f} s")


@pytest.mark.slow
def test_a_dead_workers_trial_is_rerun_by_the_other_worker(postgres_url, folder, tmp_path):
    space = write(tmp_path / "space.yaml", SPACE)
    # --heartbeat-grace-s 6: the killed worker's trial is found stale within seconds (default 120 s).
    cmd = sweep_cmd(folder, space, tmp_path / "out", postgres_url, "dead", 2, "--heartbeat-grace-s", 6)
    logs = [tmp_path / "victim.log", tmp_path / "survivor.log"]
    victim = start(other_host(cmd, "lost-node"), logs[0])
    start_s = time.monotonic()

    def victim_trial():
        try:
            s = optuna.load_study(study_name="dead", storage=postgres_url)
        except KeyError:
            return None
        return next((t for t in s.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                     if t.user_attrs.get("worker_pid")), None)     # its training process has started
    wait_for(lambda: victim_trial() is not None, 120, "the first worker's trial to start")
    survivor = start(cmd, logs[1])
    victim.kill()                                        # SIGKILL: no cleanup; its training process dies with it
    victim.wait()
    killed = victim_trial()
    finish([survivor], logs[1:], 300)
    took = time.monotonic() - start_s
    study = optuna.load_study(study_name="dead", storage=postgres_url)
    trials = study.get_trials()
    assert counted(trials) == 2
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert [t.number for t in failed if not is_surplus(t)] == [killed.number]
    rerun = [t for t in trials if (t.system_attrs.get("retry_history") or [None])[-1] == killed.number]
    assert len(rerun) == 1 and rerun[0].state == optuna.trial.TrialState.COMPLETE
    assert rerun[0].params == killed.params
    print(f"postgres sweep: worker killed mid-trial, its trial re-run by the other, {took:.0f} s")


@pytest.mark.slow
def test_optuna_dashboard_reads_the_study_over_http(postgres_url, tmp_path):
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent)) or \
        shutil.which("optuna-dashboard")
    if dashboard is None:
        pytest.skip("optuna-dashboard is not installed (pip install optuna-dashboard)")
    study = optuna.create_study(study_name="dashboard", storage=postgres_url, direction="maximize")
    study.optimize(lambda t: t.suggest_float("optim.lr", 0.01, 0.5, log=True), n_trials=3)
    port = free_port()
    with open(tmp_path / "dashboard.log", "w") as log:
        # The README's command (sweep section), against the URL the sweep workers use.
        proc = subprocess.Popen([dashboard, postgres_url, "--host", "127.0.0.1", "--port", str(port)],
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        def studies():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    return json.loads(r.read())["study_summaries"]
            except OSError:
                return None
        wait_for(lambda: studies() is not None or proc.poll() is not None, 60, "optuna-dashboard to answer")
        listed = {s["study_name"]: s for s in studies() or []}
        assert "dashboard" in listed, (tmp_path / "dashboard.log").read_text()[-2000:]
        study_id = listed["dashboard"]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == 3
        assert {t["params"][0]["name"] for t in detail["trials"]} == {"optim.lr"}
    finally:
        proc.kill()
        proc.wait()


def test_a_missing_database_driver_is_one_line_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)        # as if not installed
    with pytest.raises(RecipeError) as err:
        open_storage("postgresql://user:secret@db.example.org/sweeps")
    message = str(err.value)
    assert "the database driver for postgresql:// (Python module psycopg) is not installed" in message
    assert message.endswith("install it with: pip install 'psycopg[binary]'") and "\n" not in message
    assert "secret" not in message and "user:***@" in message


def test_an_unreachable_database_is_one_line_in_bounded_time():
    pytest.importorskip("psycopg")
    start_s = time.monotonic()
    with pytest.raises(RecipeError, match=r"--storage postgresql://u:\*\*\*@127.0.0.1:\d+/x: cannot open the database"):
        open_storage(f"postgresql://u:pw@127.0.0.1:{free_port()}/x")
    assert time.monotonic() - start_s < 30


def test_workers_of_a_shared_study_get_distinct_seeds_and_a_lone_sweep_keeps_its_seed():
    assert sampler_seed(3, "s", None) == 3
    seeds = {sampler_seed(0, "s", f"host-{pid}") for pid in range(100)}
    assert len(seeds) == 100
    assert sampler_seed(0, "s", "a") == sampler_seed(0, "s", "a") != sampler_seed(0, "t", "a")


def test_the_budget_goes_to_the_lowest_trial_numbers(tmp_path):
    """A trial runs only if fewer than --trials lower-numbered trials hold a place: running, waiting and
    finished ones do; a failure that was re-run and a surplus trial do not. (Two workers creating trials
    at once get distinct numbers from the database, so exactly the first --trials run.)"""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    dist = {"optim.lr": optuna.distributions.FloatDistribution(0.01, 1.0, log=True)}

    def add(state, lr, **attrs):
        study.add_trial(optuna.create_trial(state=state, value=1.0 if state.name == "COMPLETE" else None,
                                            params={"optim.lr": lr}, distributions=dist, user_attrs=attrs))
    S = optuna.trial.TrialState
    add(S.COMPLETE, 0.1)                                   # 0
    add(S.FAIL, 0.2, interrupted=True)                     # 1: re-run below as 2
    study.enqueue_trial({"optim.lr": 0.2})                 # 2: WAITING, its re-run
    trials = study.get_trials(deepcopy=False)
    study._storage.set_trial_system_attr(trials[2]._trial_id, "retry_history", [1])
    add(S.FAIL, 0.3, surplus=True)                         # 3: not run
    assert budget_left_for(study, 4, 3)                    # places: 0, 2 -> trial 4 is the third
    assert not budget_left_for(study, 4, 2)
    assert counted(study.get_trials()) == 1                # 0 only: 1 was re-run, 3 never ran


def test_a_schema_created_by_another_worker_at_the_same_moment_is_opened(monkeypatch, tmp_path):
    """Two workers creating the schema at once: PostgreSQL fails one CREATE TABLE on pg_type's unique index
    (seen in CI); the loser opens the schema the winner made instead of exiting."""
    from sqlalchemy.exc import IntegrityError

    from trainkit.sweep import study
    real, calls = study.RDBStorage, []

    def racing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("CREATE TABLE studies", {}, Exception('duplicate key "pg_type_typname_nsp_index"'))
        return real(*args, **kwargs)
    monkeypatch.setattr(study, "RDBStorage", racing)
    assert study.open_storage(f"sqlite:///{tmp_path / 'race.db'}") is not None and len(calls) == 2
