"""Starting or reaching a Ray cluster fails fast, before any work, with what to try (these
run with no cluster up: the module-scoped local cluster of other modules is gone)."""

import pytest


def test_a_cluster_that_cannot_be_reached_fails_at_once_with_what_to_try():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    from tl_unlearn.execution.executors import Execution, connect_cluster

    with pytest.raises(RuntimeError, match=r"127.0.0.1:1.*fewer actors.*in-process default"):
        connect_cluster(Execution("ray", address="127.0.0.1:1"))


def test_a_cluster_that_fails_to_start_is_a_clear_error_before_any_work(tmp_path, monkeypatch):
    """Ray's raw "node timed out during startup" becomes an error that says what to try,
    raised before the model loads."""
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    import tl_unlearn.models.loading as loading
    from tl_unlearn import BenchmarkConfig, run_benchmark

    def no_start(*args, **kwargs):
        raise Exception("The current node timed out during startup.")

    loaded = []
    monkeypatch.setattr(ray, "init", no_start)
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loaded.append(a))
    with pytest.raises(RuntimeError, match=r"start a local Ray cluster.*timed out.*--actors 1"):
        run_benchmark(
            BenchmarkConfig(model="tiny", methods=["prune-abs"]),
            executor="ray",
            output_dir=tmp_path / "out",
            progress=False,
        )
    assert not loaded and not (tmp_path / "out").exists()
