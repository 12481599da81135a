"""Tracking against a local SQLite store and a real `mlflow server`, read back via MlflowClient."""
import multiprocessing as mp
import time

import pytest
from mlflow import MlflowClient

from ddl import tracking as T
from ddl.config import TrackingConfig, default_uri
from ddl.tracking import store as TS
from mlflow_server import free_port, mlflow_server  # noqa: F401 - the module-scoped fixture

EPOCHS = [{"train_cost": 0.9 - 0.1 * e, "dev_cost": 1.0 - 0.1 * e, "train_error": 0.2 - 0.05 * e,
           "dev_error": 0.3 - 0.05 * e, "lr": 0.1} for e in range(5)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store per module: creating a fresh one costs ~2 s of migrations."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def _cfg(uri, **kw):
    return TrackingConfig(uri=uri, experiment=kw.pop("experiment", "tests"), **kw)


def _steps(client, run_id, key):
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _round_trip(uri, tmp_path):
    params = {f"p{i:03d}": i for i in range(150)} | {"optimizer.name": "adam", "long": "x" * 7000}
    tracker = T.Tracker.start(_cfg(uri, run_name="rt"), params, {"ddl.backend": "numpy"})
    for epoch in range(3):
        tracker.log_epoch(epoch, EPOCHS[epoch])
    tracker.set_tags({"ddl.world_size": "2"})
    (tmp_path / "notes.txt").write_text("hello")
    tracker.log_artifact(tmp_path / "notes.txt", "extra")
    (tmp_path / "config.yaml").write_text("a: 1\n")
    tracker.log_artifact(tmp_path / "config.yaml")
    tracker.end()
    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert len(run.data.params) == 152  # more than one 100-param batch
    assert run.data.params["optimizer.name"] == "adam" and run.data.params["p149"] == "149"
    assert len(run.data.params["long"]) == T.MAX_PARAM_VALUE
    assert _steps(client, tracker.run_id, "cost/train") == [0, 1, 2]
    assert [m.value for m in client.get_metric_history(tracker.run_id, "error/dev")] == pytest.approx(
        [0.3, 0.25, 0.2], abs=1e-12)
    assert run.data.tags["ddl.world_size"] == "2" and run.data.tags["ddl.backend"] == "numpy"
    assert run.info.status == "FINISHED" and run.info.run_name == "rt"
    assert {a.path for a in client.list_artifacts(tracker.run_id)} == {"extra", "config.yaml"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "extra")] == ["extra/notes.txt"]
    return tracker.run_id


def test_sqlite_round_trip(store, tmp_path):
    _round_trip(store, tmp_path)


def test_diagnosis_metrics_and_tag(store):
    tracker = T.Tracker.start(_cfg(store, bayes_error=0.005), {})
    tracker.log_epoch(0, {"train_error": 0.01, "dev_error": 0.11})
    tracker.flush()  # epochs are buffered for up to Tracker.FLUSH_SECONDS
    run = MlflowClient(store).get_run(tracker.run_id)
    assert run.data.tags["diagnosis"] == "high variance"
    assert run.data.metrics["bias/avoidable"] == pytest.approx(0.005, abs=1e-12)
    assert run.data.metrics["bias/variance"] == pytest.approx(0.10, abs=1e-12)
    tracker.log_epoch(1, {"train_error": 0.15, "dev_error": float("nan"), "train_cost": float("nan")})
    tracker.flush()
    run = MlflowClient(store).get_run(tracker.run_id)
    assert run.data.tags["diagnosis"] == "high bias"  # no dev error: judged on bias only
    assert run.data.metrics["cost/train"] != run.data.metrics["cost/train"]  # NaN kept as NaN


def test_resume_never_duplicates_epochs(store):
    first = T.Tracker.start(_cfg(store), {"optimizer.lr": 0.1})
    for epoch in range(3):
        first.log_epoch(epoch, EPOCHS[epoch])
    first.end("KILLED")  # e.g. the SLURM job hit its time limit
    resumed = T.Tracker.start(_cfg(store), {"optimizer.lr": 0.1, "new": 1}, run_id=first.run_id)
    client = MlflowClient(store)
    assert client.get_run(first.run_id).info.status == "RUNNING"
    for epoch in range(1, 5):
        resumed.log_epoch(epoch, EPOCHS[epoch])
    resumed.end()
    run = client.get_run(first.run_id)
    for key in ("cost/train", "error/dev", "bias/variance", "bias/avoidable"):
        assert _steps(client, first.run_id, key) == [0, 1, 2, 3, 4], key
    assert run.data.params == {"optimizer.lr": "0.1", "new": "1"}
    assert run.info.status == "FINISHED"


def test_resuming_an_unknown_run_is_a_clear_error(store):
    with pytest.raises(T.TrackingError, match="cannot resume MLflow run '0+' from sqlite"):
        T.Tracker.start(_cfg(store), {}, run_id="0" * 32)


def test_parent_with_nested_children(store):
    cfg = _cfg(store, experiment="sweep")
    parent = T.start_parent(cfg, "sweep 1", {"sweep_dir": "multirun/x"}, {"ddl.sweep_dir": "x"})
    children = [T.open_tracker(cfg, {"optimizer.lr": lr}, nested_in=parent) for lr in (0.1, 0.01)]
    joined = T.open_tracker(_cfg(store, experiment="sweep", parent_run_id=parent), {})
    for child in [*children, joined]:
        child.end()
    T.Tracker.attach(cfg, parent).end("FINISHED")
    client = MlflowClient(store)
    eid = client.get_experiment_by_name("sweep").experiment_id
    found = client.search_runs([eid], f"tags.mlflow.parentRunId = '{parent}'")
    assert {r.info.run_id for r in found} == {c.run_id for c in [*children, joined]}
    assert client.get_run(parent).data.tags["ddl.sweep"] == "true"
    assert client.get_run(parent).info.status == "FINISHED"
    assert len(T.fetch_runs(TrackingConfig(uri=store, experiment="sweep"), parent=parent)) == 3
    assert len(T.fetch_runs(TrackingConfig(uri=store, experiment="sweep"))) == 4


def test_null_tracker_when_disabled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracker = T.open_tracker(TrackingConfig(enabled=False), {"a": 1})
    assert isinstance(tracker, T.NullTracker) and tracker.run_id is None
    tracker.log_epoch(0, {"train_cost": 1.0})
    tracker.set_tags({"a": "b"})
    tracker.log_artifact(tmp_path / "missing.txt")
    tracker.end("FAILED")
    assert list(tmp_path.iterdir()) == []  # no store was created


def test_default_uri_and_flatten(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert default_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    # MLflow's own variable wins (a notebook pointing at the repository's store); a relative
    # SQLite path made absolute, so every process of a sweep finds the same file
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///../store.db")
    assert default_uri() == f"sqlite:///{tmp_path.parent.resolve()}/store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert default_uri() == "http://127.0.0.1:5999" and TrackingConfig().uri == "http://127.0.0.1:5999"
    flat = T.flatten_config({"optimizer": {"name": "adam", "lr": 0.01}, "model": {"hidden": [20, 7]},
                             "seed": 1, "tracking": {"uri": None}})
    assert flat == {"optimizer.name": "adam", "optimizer.lr": "0.01", "model.hidden": "[20, 7]",
                    "seed": "1", "tracking.uri": "None"}


def _ensure_in_child(uri, barrier, results):
    barrier.wait()  # all four hit the fresh database at the same moment
    results.put(T.ensure_store(uri, "race"))


def test_ensure_store_from_four_processes_at_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    ctx = mp.get_context("spawn")  # no fork of a process that holds SQLite connections
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(uri, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    ids = {results.get(timeout=5) for _ in procs}
    assert len(ids) == 1
    assert MlflowClient(uri).get_experiment_by_name("race").experiment_id in ids


def test_unreachable_server_fails_fast_naming_the_uri(monkeypatch):
    for name in TS.HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)  # the library's fail-fast defaults apply
    uri = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(T.TrackingError, match="Cannot use the MLflow tracking store at " + uri):
        T.Tracker.start(_cfg(uri), {})
    assert time.monotonic() - start < 30


def test_sqlite_uri_must_name_a_file():
    with pytest.raises(ValueError, match="sqlite:///path/to.db"):
        T.ensure_store("sqlite://", "x")


def test_real_server_round_trip(mlflow_server, tmp_path):  # noqa: F811 - pytest fixture
    run_id = _round_trip(mlflow_server, tmp_path)
    # Proxied artifacts: uploaded and downloaded through the server's HTTP artifact API.
    client = MlflowClient(mlflow_server)
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run_id, "extra/notes.txt", str(tmp_path / "down"))
    assert open(local).read() == "hello"


def test_epochs_are_buffered_and_flushed_in_few_calls(store, monkeypatch):
    tracker = T.Tracker.start(_cfg(store), {})
    calls = []
    real = tracker._client.log_batch
    monkeypatch.setattr(tracker._client, "log_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    for epoch in range(300):
        tracker.log_epoch(epoch, {"train_cost": 1.0 / (epoch + 1), "train_error": 0.1})
    tracker.end()
    assert len(calls) <= 6, f"{len(calls)} store round trips for 300 epochs"
    history = MlflowClient(store).get_metric_history(tracker.run_id, "cost/train")
    assert sorted(m.step for m in history) == list(range(300))
