"""Shards from an object store, against a real S3 API (moto's ThreadedMotoServer on 127.0.0.1):
training reads s3://bucket/prefix with the endpoint and credentials from the standard AWS
environment variables; a run killed with SIGKILL mid-epoch resumes to the weights of an
uninterrupted run (the same remaining sample order); an unreachable endpoint or a missing shard is
one error after bounded, logged retries, never a hang."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import make_image_folder
from test_distributed import ENV, ROOT, python, tiny_recipe
from test_faults import wait_for_mid_epoch_checkpoint, wait_for_rows, weights

from trainkit.config.recipe import DataCfg, RuntimeCfg
from trainkit.data import streaming
from trainkit.data.sources import DataError, open_source
from trainkit.runtime.checkpoint import load_checkpoint

moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install 'moto[server]')")
boto3 = pytest.importorskip("boto3")

BUCKET, PREFIX = "datasets", "tiny-wds/v1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A local S3 API holding the tiny 8 px shard set under s3://datasets/tiny-wds/v1; yields
    (image folder, the AWS environment that points at it)."""
    base = tmp_path_factory.mktemp("s3")
    folder = make_image_folder(base / "folder", per_class=(13, 7), size=8)
    python("prepare.py", folder, base / "wds", "--format", "webdataset", "--shard-mb", 0.004, "--workers", 0)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted((base / "wds").iterdir()):                  # as `aws s3 cp --recursive` would
        client.upload_file(str(path), BUCKET, f"{PREFIX}/{path.name}")
    yield folder, env, client
    server.stop()


@pytest.fixture
def aws_env(s3, monkeypatch):
    for key, value in s3[1].items():
        monkeypatch.setenv(key, value)
    streaming._S3_CLIENTS.clear()              # a client made under other settings must not be reused
    yield s3[1]
    streaming._S3_CLIENTS.clear()


@pytest.mark.slow   # three train.py runs reading from S3 (~40 s on a quiet 2-core machine, 2+ min under load)
def test_a_killed_run_from_s3_resumes_to_the_uninterrupted_weights(s3, tmp_path):
    folder, env, _ = s3
    # 6 steps per epoch (global batch 6), a step checkpoint every 4: most are mid-epoch. 2 loader workers,
    # each with its own S3 client; each process downloads into its own cache (a fresh node).
    common = ["data.format=webdataset", f"data.root=s3://{BUCKET}/{PREFIX}", "data.in_memory=false",
              "runtime.workers=2", "data.window_shards=2", "schedule.epochs=8", "train.global_batch=6",
              "runtime.checkpoint_every_steps=4", "augment.hflip=0.5"]
    run_env = {**ENV, **env}

    def train(name: str, *extra: str) -> list:
        return [sys.executable, *map(str, tiny_recipe(folder, tmp_path, name, *common,
                                                      f"runtime.shard_cache_dir={tmp_path / ('cache-' + name)}",
                                                      *extra))]
    start = time.monotonic()
    subprocess.run(train("straight"), cwd=ROOT, env=run_env, check=True, capture_output=True, timeout=300)
    straight_s = time.monotonic() - start
    killed = tmp_path / "killed"
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([*train("killed"), "--resume", "auto"], cwd=ROOT, env=run_env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_for_rows(killed / "metrics.jsonl", 2, proc, timeout=240)
            wait_for_mid_epoch_checkpoint(killed / "last.pt", proc)
            os.kill(proc.pid, signal.SIGKILL)         # no cleanup of any kind
        finally:
            proc.wait()
    saved = load_checkpoint(killed / "last.pt")
    assert saved["step_in_epoch"] > 0                # the resume starts mid-epoch
    resumed = subprocess.run([*train("killed"), "--resume", "auto"], cwd=ROOT, env=run_env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    # Bit-identical weights after 48 steps: the resumed run saw the remaining samples in the same order.
    a, b = weights(tmp_path / "straight"), weights(killed)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    rows = [json.loads(ln) for ln in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(ln) for ln in (killed / "metrics.jsonl").read_text().splitlines()]
    # Each epoch's val numbers too (the resumed epoch's train_loss covers only its remaining steps).
    # (a run whose val is the test split has no val pass after its last epoch: the summary's test pass is it)
    assert [(r["epoch"], r.get("val_loss"), r.get("val_top1")) for r in rows] == \
        [(r["epoch"], r.get("val_loss"), r.get("val_top1")) for r in again]
    print(f"s3: uninterrupted run {straight_s:.0f} s; killed at optimizer step "
          f"{saved['train_step']['optimizer_steps']} (epoch {saved['epoch'] + 1}), resumed to the same weights")


def test_an_unreachable_endpoint_is_one_error_after_logged_retries(aws_env, monkeypatch, caplog):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")     # nothing listens there
    start = time.monotonic()
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as err:
        open_source(DataCfg(root=f"s3://{BUCKET}/{PREFIX}", format="webdataset"))
    took = time.monotonic() - start
    message = str(err.value)
    assert message.startswith(f"cannot fetch s3://{BUCKET}/{PREFIX}/manifest.json from http://127.0.0.1:")
    assert f"after {streaming.S3_TRIES} tries" in message and "\n" not in message
    retries = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(retries) == streaming.S3_TRIES - 1 and "again in 0.5 s" in retries[0], retries
    assert took < 30, took                                        # back-off 0.5 + 1 + 2 s, connect refused at once
    print(f"s3: unreachable endpoint: one error after {streaming.S3_TRIES} tries, {took:.1f} s")


def test_a_missing_shard_or_prefix_is_one_error_without_retries(s3, aws_env, tmp_path, caplog):
    folder, _, client = s3
    with pytest.raises(DataError, match=rf"s3://{BUCKET}/nothing/manifest.json: no such object"):
        open_source(DataCfg(root=f"s3://{BUCKET}/nothing", format="webdataset"))
    # A set whose test shard 1 was never uploaded: the manifest and indexes load, the shard's read fails.
    client.copy_object(Bucket=BUCKET, Key="partial/manifest.json", CopySource=f"{BUCKET}/{PREFIX}/manifest.json")
    for key in ("train-index.npy", "test-index.npy"):
        client.copy_object(Bucket=BUCKET, Key=f"partial/{key}", CopySource=f"{BUCKET}/{PREFIX}/{key}")
    source = open_source(DataCfg(root=f"s3://{BUCKET}/partial", format="webdataset"),
                         RuntimeCfg(shard_cache_dir=str(tmp_path / "cache")))
    test = source.splits["test"]
    with caplog.at_level(logging.WARNING), pytest.raises(DataError) as err:
        test.blobs[0]
    assert str(err.value).startswith(f"s3://{BUCKET}/partial/test-0000") and "no such object (a missing shard?" \
        in str(err.value)
    assert not [r for r in caplog.records if "again in" in r.getMessage()]     # not retried: it will not appear


def test_train_py_names_a_missing_s3_prefix_in_one_line(s3, tmp_path):
    folder, env, _ = s3
    proc = subprocess.run([sys.executable, *map(str, tiny_recipe(folder, tmp_path, "x", "data.format=webdataset",
                                                                 f"data.root=s3://{BUCKET}/v2"))],
                          cwd=ROOT, env={**ENV, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (f"error: s3://{BUCKET}/v2/manifest.json: no such object (a missing "
                                                    "shard? upload the whole folder written by prepare.py)")
