"""The study: its database, trials that died with a killed sweep, and running one trial as a process.

A trial's state lives in the Optuna database (SQLite under runs/ by default, or any SQLAlchemy
URL Optuna supports), so a sweep killed at any moment continues when the same command runs
again. A trial that was running when its sweep died is marked FAIL and re-queued once with the
same parameters (Optuna's RetryHeartbeatStaleTrialCallback): it is neither lost nor counted twice, since
the budget (--trials) counts finished trials minus the failed ones that were retried.

Dead trials are found two ways: on this machine at once, by the pid (and start time) of the sweep
that ran them; on other machines sharing the study, by Optuna's heartbeat (a trial whose sweep has
not written a heartbeat for GRACE_S seconds is failed and retried by whichever sweep looks next).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import IntegrityError   # optuna's RDBStorage is built on SQLAlchemy

from trainkit.config import formats
from trainkit.config.schema import RecipeError
from trainkit.sweep.space import Dimension, override

log = logging.getLogger("trainkit")

HEARTBEAT_S = 20        # how often a running trial's sweep writes "still alive"
GRACE_S = 120           # no heartbeat for this long: the trial's sweep is gone (other machines)
MAX_RETRY = 2           # an interrupted trial is re-run at most this often
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# A training process ended by a signal (negative: killed; 130: Ctrl-C; 143: SIGTERM) was interrupted, not
# failed by its recipe: it is re-run, like a trial whose sweep died.
INTERRUPTED_EXIT = {-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT, 130, 143}


class TrialFailed(Exception):
    """A trial's training process exited with an error; the trial is recorded as FAIL."""


def default_storage(out_dir: Path) -> str:
    return f"sqlite:///{out_dir / 'study.db'}"


# The driver module a SQLAlchemy URL imports (postgresql:// means psycopg 3 since SQLAlchemy 2.1) and
# how to install it.
DRIVERS = {"psycopg": "pip install 'psycopg[binary]'", "psycopg2": "pip install psycopg2-binary",
           "pg8000": "pip install pg8000", "MySQLdb": "pip install mysqlclient", "pymysql": "pip install pymysql"}
CONNECT_TIMEOUT = ("postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql", "mysql+mysqldb",
                   "mysql+pymysql")    # dialects whose driver takes connect_timeout (seconds)


def shown_url(url: str) -> str:
    """The URL as an error line may show it: the password replaced by ***."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", url)


def is_shared(url: str | None) -> bool:
    """Whether other sweeps may write to this study: any database named with --storage. The default
    (a SQLite file inside this sweep's own output folder) belongs to this process alone."""
    return url is not None


def _create_storage(url: str, kwargs: dict, grace_s: int, attempts: int = 3) -> RDBStorage:
    """RDBStorage, tried again when another worker created the schema at the same moment: PostgreSQL's
    concurrent CREATE TABLE fails one of them on a unique index (pg_type) although the schema is then there."""
    def create() -> RDBStorage:
        return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=max(1, grace_s // 6), grace_period=grace_s,
                          heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
    for attempt in range(attempts - 1):
        try:
            return create()
        except IntegrityError:
            time.sleep(0.5 * (attempt + 1))
    return create()   # the last try's error is the user's one line


def open_storage(url: str, grace_s: int = GRACE_S) -> RDBStorage:
    """The study database; a missing driver or an unreachable server is one error line."""
    kwargs = {}
    if url.startswith("sqlite"):
        # Several sweep threads (--jobs) write to one file; wait for the lock rather than fail.
        kwargs = {"connect_args": {"timeout": 60}}
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    else:
        # A server that does not answer: fail in seconds, not after the OS's TCP timeout (minutes).
        timeout = {"connect_args": {"connect_timeout": 10}} if url.split("://")[0] in CONNECT_TIMEOUT else {}
        kwargs = {"pool_pre_ping": True, **timeout}
    where = f"--storage {shown_url(url)}"
    try:
        return _create_storage(url, kwargs, grace_s)
    except ImportError as err:
        module = getattr(err.__cause__, "name", None) or "?"
        hint = f"; install it with: {DRIVERS[module]}" if module in DRIVERS else ""
        raise RecipeError(f"{where}: the database driver for {url.split('://', 1)[0]}:// (Python module "
                          f"{module}) is not installed{hint}") from None
    except ValueError as err:
        raise RecipeError(f"{where}: {' '.join(str(err).split())}") from None
    except Exception as err:  # noqa: BLE001 -- drivers raise their own types; any of them is one line
        first = next((ln.strip() for ln in str(err).strip().splitlines() if ln.strip()), type(err).__name__)
        raise RecipeError(f"{where}: cannot open the database: {shown_url(first)}") from None


def sampler_seed(seed: int, study: str, worker: str | None) -> int:
    """The sampler seed of one worker: ``seed`` itself for a sweep alone on its study, else derived
    from (seed, study, worker) so that workers sharing a study never draw the same sequence (every
    worker started with the same command would otherwise propose the same parameters)."""
    if worker is None:
        return seed
    digest = hashlib.sha256(f"{seed}/{study}/{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def worker_name() -> str:
    """This sweep's identity among the workers of a study: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def check_same_sweep(study: optuna.Study, identity: dict) -> None:
    """A study continues only under the command that started it (recipe, overrides, space, metric)."""
    saved = study.user_attrs.get("sweep")
    if saved is None:
        study.set_user_attr("sweep", identity)
        return
    for key, value in identity.items():
        if saved.get(key) != value:
            raise RecipeError(f"study {study.study_name!r} was started with another {key} "
                              f"({json.dumps(saved.get(key))} vs {json.dumps(value)}); "
                              f"run the same command to continue it, or name a new one with --study")


# ------------------------------------------------------------------ dead and retried trials

def process_start(pid: int) -> str | None:
    """Start time of a live process (Linux /proc), so a reused pid is not mistaken for our sweep."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """RUNNING trials started by a sweep on this host that is no longer alive: FAIL and re-queue them."""
    storage, host, failed = study._storage, socket.gethostname(), []
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != host or "sweep_pid" not in attrs:
            continue    # another machine's: the heartbeat decides
        if process_start(attrs["sweep_pid"]) == attrs.get("sweep_start"):
            continue    # a sweep still running it (another process on this machine)
        try:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue    # another process got there first
        retry(study, storage.get_trial(trial._trial_id))
        failed.append(trial.number)
    return failed


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """FAIL trials marked ``interrupted`` (Ctrl-C, or a signal killed the training process, e.g.
    the OOM killer) and not yet re-run: re-queue them with the same parameters."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
    queued = []
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted") and trial.number not in retried:
            retry(study, trial)
            queued.append(trial.number)
    return queued


def retried_numbers(trials: list[FrozenTrial]) -> dict[int, int]:
    """{failed trial number: number of the trial that re-ran its parameters}."""
    out = {}
    for t in trials:
        history = t.system_attrs.get("retry_history") or []
        if history:
            out[history[-1]] = t.number
    return out


def counted(trials: list[FrozenTrial]) -> int:
    """Trials that used up the budget: finished ones, except failures that were re-run and trials
    that found the budget already spent when they started (never run)."""
    retried = retried_numbers(trials)
    return sum(1 for t in trials if t.state in FINISHED and t.number not in retried and not is_surplus(t))


def is_surplus(trial: FrozenTrial) -> bool:
    return bool(trial.user_attrs.get("surplus"))


class BudgetSpent(Exception):
    """This trial started when the study's budget was already taken by other trials; it does not run."""


def takes_budget(trial: FrozenTrial, retried: dict[int, int]) -> bool:
    """Whether ``trial`` holds a place in the budget: running, waiting or finished, except a failure
    that was re-run (its re-run holds the place) and a surplus trial."""
    if is_surplus(trial):
        return False
    return not (trial.state == TrialState.FAIL and trial.number in retried)


def budget_left_for(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether trial ``number`` is within ``budget``: fewer than ``budget`` trials with lower numbers
    hold a place. Trial numbers are handed out by the database one at a time, so of several
    workers creating trials at once exactly the first ``budget`` run, whichever machine they are on."""
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    return sum(1 for t in trials if t.number < number and takes_budget(t, retried)) < budget


class StopAtBudget:
    """Optuna callback: stop this sweep once the study's budget of ``n`` trials is taken (finished
    trials, and trials other sweeps are running): it starts no trial beyond the budget."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        if is_surplus(trial) or sum(1 for t in trials if takes_budget(t, retried)) >= self.n:
            study.stop()


def wait_for_others(study: optuna.Study, budget: int, poll_s: float) -> bool:
    """While trials of other workers hold the rest of the budget: wait, failing (and re-queueing) any
    whose worker stopped sending heartbeats. True when there is a trial for this worker to run
    (a re-queued one, or a place freed), False when the study holds its ``budget`` finished trials."""
    while True:
        optuna.storages.fail_stale_trials(study)    # heartbeat older than the grace period: FAIL + re-queue
        fail_dead_local_trials(study)
        requeue_interrupted(study)
        trials = study.get_trials(deepcopy=False)
        if counted(trials) >= budget:
            return False
        retried = retried_numbers(trials)
        if any(t.state == TrialState.WAITING for t in trials) or \
                sum(1 for t in trials if takes_budget(t, retried)) < budget:
            return True
        time.sleep(poll_s)


# ------------------------------------------------------------------ one trial = one process

@dataclass
class Slots:
    """--jobs K: K trials at once, each with cpu_threads threads and, with GPUs, one GPU each."""
    jobs: int
    cpu_threads: int
    gpus: list[str]

    def __post_init__(self):
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(self.jobs):
            self.free.put(i)

    @classmethod
    def detect(cls, jobs: int) -> Slots:

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        gpus: list[str] = []
        if torch.cuda.is_available():
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            gpus = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        return cls(jobs, max(1, cpus // jobs), gpus)


@dataclass
class TrialRunner:
    """The Optuna objective: a training process per trial, its val values fed to the pruner."""
    recipe: str
    overrides: list[str]
    space: list[Dimension]
    trials_dir: Path
    slots: Slots
    metric: str
    budget: int

    def __call__(self, trial: optuna.Trial) -> float:
        if not budget_left_for(trial.study, trial.number, self.budget):
            # Another worker's trial took the last place between our check and this trial's creation.
            trial.set_user_attr("surplus", True)
            raise BudgetSpent(f"trial {trial.number}: the budget of {self.budget} trials is taken; not run")
        params = {dim.key: dim.suggest(trial) for dim in self.space}
        name = f"trial-{trial.number:04d}"
        run_dir = self.trials_dir / name
        # A re-run starts with its failed try's attributes (Optuna copies them): reset what this try decides.
        for key, value in (("run_dir", str(run_dir)), ("host", socket.gethostname()), ("sweep_pid", os.getpid()),
                           ("sweep_start", process_start(os.getpid())), ("interrupted", False), ("error", "")):
            trial.set_user_attr(key, value)
        slot = self.slots.free.get()
        try:
            return self.run(trial, params, run_dir, slot)
        except KeyboardInterrupt:   # Ctrl-C: the trial did not fail on its own; the next run re-runs it
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            self.slots.free.put(slot)

    def command(self, params: dict, run_dir: Path, report_fd: int) -> list[str]:
        runtime = [f"runtime.out_dir={run_dir.parent}", f"runtime.run_name={run_dir.name}", "runtime.progress=false"]
        if not any(o.startswith("runtime.threads=") for o in self.overrides):
            runtime.append(f"runtime.threads={self.slots.cpu_threads}")
        return [sys.executable, "-m", "trainkit.sweep.worker", self.recipe, *self.overrides,
                *(override(k, v) for k, v in params.items()), *runtime, "--report-fd", str(report_fd)]

    def run(self, trial: optuna.Trial, params: dict, run_dir: Path, slot: int) -> float:
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TRAINKIT_SWEEP_PID": str(os.getpid())}
        if self.slots.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.slots.gpus[slot % len(self.slots.gpus)]
        read_fd, write_fd = os.pipe()
        start = time.perf_counter()
        with open(run_dir / "console.log", "ab") as console:
            proc = subprocess.Popen(self.command(params, run_dir, write_fd), stdin=subprocess.PIPE,
                                    stdout=console, stderr=subprocess.STDOUT, pass_fds=(write_fd,), env=env,
                                    cwd=Path.cwd(), text=True)
            os.close(write_fd)
            trial.set_user_attr("worker_pid", proc.pid)
            pruned_at = self.follow(trial, proc, read_fd)
            code = proc.wait()
        wall = time.perf_counter() - start
        trial.set_user_attr("wall_s", round(wall, 1))
        result_path = run_dir / "trial.json"
        if code in INTERRUPTED_EXIT:
            trial.set_user_attr("interrupted", True)
            raise TrialFailed(f"trial {trial.number}: its training process was stopped by a signal (exit {code})")
        if code != 0 or not result_path.exists():
            lines = (run_dir / "console.log").read_text(errors="replace").strip().splitlines()
            last = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
            trial.set_user_attr("error", last[:300])
            raise TrialFailed(f"trial {trial.number}: exit status {code}: {last}")
        result = formats.read(result_path, formats.TRIAL)
        for key in ("value", "best_epoch", "epochs_run", "train_time_s"):
            trial.set_user_attr(key, result[key])
        if pruned_at is not None:
            raise optuna.TrialPruned(f"at epoch {pruned_at}")
        if result["value"] is None:
            raise TrialFailed(f"trial {trial.number}: no finite val {self.metric} in any epoch")
        return float(result["value"])

    @staticmethod
    def follow(trial: optuna.Trial, proc: subprocess.Popen, read_fd: int) -> int | None:
        """Feed each epoch's val value to the pruner and answer the worker; the epoch it was pruned at."""
        pruned_at = None
        with os.fdopen(read_fd) as reports:
            for line in reports:
                row = json.loads(line)
                trial.report(row["value"], row["epoch"])
                prune = pruned_at is None and not row.get("last") and trial.should_prune()
                if prune:
                    pruned_at = row["epoch"]
                try:
                    proc.stdin.write("prune\n" if prune else "go\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    break
        proc.stdin.close()
        return pruned_at
