"""Two torchrun launchers on one host as two nodes (2 nodes x 1 process, c10d rendezvous): a
SIGKILLed worker is restarted on both nodes and resumes from the last step checkpoint to the
result of an uninterrupted 1 node x 2 process run; a lost node (a whole launcher killed) makes
the survivor fail in bounded time with one clear line instead of hanging."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_image_folder
from test_distributed import ENV, ROOT, assert_same_weights, tiny_recipe
from test_faults import children, wait_for_mid_epoch_checkpoint, wait_for_rows, weights
from trainkit.config.schema import RecipeError
from trainkit.runtime.checkpoint import load_checkpoint
from trainkit.runtime.distributed import SHARE_STORE_OFF, attempt_store, check_restartable

# 6 optimizer steps per epoch (global batch 6 = 2 x 3), a step checkpoint every 4: most are mid-epoch.
LONG = ["schedule.epochs=8", "train.global_batch=6", "runtime.checkpoint_every_steps=4", "runtime.sync_batchnorm=true"]
JOIN_TIMEOUT_S = 20      # how long a node waits in the rendezvous for the others (torch's default: 600)
# A fresh rendezvous store per round (docs/distributed.md): what makes a restart across nodes consistent.
NODE_ENV = {**ENV, SHARE_STORE_OFF: "1"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("multinode") / "folder", per_class=(13, 7), size=8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launcher(port: int, run_id: str, *train_args) -> list[str]:
    """What each node runs (docs/distributed.md, "Several machines"), with the endpoint on this host."""
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}",
            f"--rdzv-conf=join_timeout={JOIN_TIMEOUT_S}", "--max-restarts=1", *map(str, train_args),
            "--resume", "auto"]


def start_nodes(tmp_path: Path, name: str, train_args: list) -> list[tuple[subprocess.Popen, Path]]:
    """Node 0 first: once it listens on the endpoint it hosts the rendezvous store (as the node named
    by --rdzv-endpoint does on a cluster); then node 1."""
    port = free_port()
    nodes = []
    for node in range(2):
        log = tmp_path / f"{name}-node{node}.log"       # files, not pipes: nobody reads a pipe while we wait
        with open(log, "w") as out:
            proc = subprocess.Popen(launcher(port, name, *train_args), cwd=ROOT, env=NODE_ENV, stdout=out,
                                    stderr=subprocess.STDOUT)
        nodes.append((proc, log))
        if node == 0:
            wait_listening(port, proc)
    return nodes


def wait_listening(port: int, proc: subprocess.Popen, timeout=120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"node 0 did not start the rendezvous store on port {port}")


def descendants(pid: int) -> list[int]:
    try:
        kids = children(pid)
    except OSError:         # gone already
        return []
    return [p for kid in kids for p in (kid, *descendants(kid))]


def kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL a node: its launcher and every process under it (torchrun's workers run in their own
    process groups, so a signal to the launcher's group would leave them running)."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def stop(nodes) -> None:
    for proc, _ in nodes:
        if proc.poll() is None:
            kill_node(proc)


def wait_all(nodes, timeout: float) -> float:
    start = time.monotonic()
    for proc, log in nodes:
        try:
            proc.wait(timeout=max(1.0, timeout - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            stop(nodes)
            raise AssertionError(f"node still running after {timeout} s (a hang):\n" + log.read_text()[-3000:])
    return time.monotonic() - start


@pytest.mark.slow
def test_two_nodes_survive_a_sigkilled_worker_and_match_one_node(folder, tmp_path):
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    *map(str, tiny_recipe(folder, tmp_path, "straight", *LONG))], cwd=ROOT, env=ENV, check=True,
                   capture_output=True, timeout=300)
    run_dir = tmp_path / "killed"
    nodes = start_nodes(tmp_path, "killed", tiny_recipe(folder, tmp_path, "killed", *LONG))
    try:
        wait_for_rows(run_dir / "metrics.jsonl", 3, nodes[0][0], timeout=240)
        wait_for_mid_epoch_checkpoint(run_dir / "last.pt", nodes[0][0])      # so the restart resumes mid-epoch
        worker = children(nodes[1][0].pid)
        assert len(worker) == 1, worker
        os.kill(worker[0], signal.SIGKILL)
        took = wait_all(nodes, 240)
    finally:
        stop(nodes)
    texts = [log.read_text() for _, log in nodes]
    assert all(proc.returncode == 0 for proc, _ in nodes), "\n----\n".join(t[-3000:] for t in texts)
    both = "".join(texts)
    assert both.count("plan: world 2") == 2 and "resumed from" in both, both[-3000:]   # started twice, resumed once
    assert load_checkpoint(run_dir / "last.pt")["train_step"]["optimizer_steps"] == 48
    # Sample order and weights: identical to one node with 2 processes (same global batch, sync BN, fp32).
    assert_same_weights(weights(tmp_path / "straight"), weights(run_dir), rtol=0, atol=0)
    a, b = (json.loads((tmp_path / n / "summary.json").read_text()) for n in ("straight", "killed"))
    assert abs(a["top1"] - b["top1"]) <= 1.0
    print(f"multinode: restart after SIGKILL finished in {took:.0f} s")


@pytest.mark.slow
@pytest.mark.parametrize("lost", [1, 0], ids=["worker-node", "endpoint-node"])
def test_a_lost_node_makes_the_survivor_fail_in_bounded_time_with_one_line(folder, tmp_path, lost):
    """Node 1 lost: the survivor's worker names the lost peer in one line, its agent restarts it and
    gives up when the rendezvous times out (join_timeout). Node 0 lost (it hosts the rendezvous
    store): the survivor's agent fails at once with torch's RendezvousConnectionError line."""
    run_dir = tmp_path / "lost"
    nodes = start_nodes(tmp_path, "lost", tiny_recipe(folder, tmp_path, "lost", *LONG, "schedule.epochs=40"))
    try:
        wait_for_rows(run_dir / "metrics.jsonl", 2, nodes[0][0], timeout=240)
        kill_node(nodes[lost][0])                                      # the node is gone: launcher and worker
        start = time.monotonic()
        survivor = [nodes[1 - lost]]
        wait_all(survivor, JOIN_TIMEOUT_S + 90)
        took = time.monotonic() - start
    finally:
        stop(nodes)
    proc, log = survivor[0]
    text = log.read_text()
    assert proc.returncode != 0, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if lost == 1:
        errors = [ln for ln in lines if ln.startswith("error: ")]
        assert len(errors) == 1 and "lost contact with another process of the job" in errors[0], text[-3000:]
        assert "RendezvousTimeoutError" in text
        line = errors[0]
    else:
        line = next(ln for ln in reversed(lines) if "Error:" in ln)
        assert "RendezvousConnectionError: The connection to the C10d store has failed" in line, text[-3000:]
    print(f"multinode: node {lost} lost; the survivor failed {took:.0f} s later: {line[:160]}")


def test_a_multinode_job_that_could_not_restart_is_refused_before_training(monkeypatch):
    """torch's default shared rendezvous store + several nodes + --max-restarts: refused in one line
    (a restart would hang); one node, no restarts, or a store per round are fine."""
    env = {"GROUP_WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "1", "TORCHELASTIC_USE_AGENT_STORE": "True"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RecipeError, match=f"torchrun over 2 nodes with --max-restarts 1: set {SHARE_STORE_OFF}=1"):
        check_restartable()
    for key, value in (("GROUP_WORLD_SIZE", "1"), ("TORCHELASTIC_MAX_RESTARTS", "0"),
                       ("TORCHELASTIC_USE_AGENT_STORE", "False")):
        monkeypatch.setenv(key, value)
        check_restartable()
        monkeypatch.setenv(key, env[key])
    # A store per round: a restarted attempt uses env:// as it is, whatever its restart count.
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "1")
    assert attempt_store(0, 2) is None
