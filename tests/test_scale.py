"""Units of work and executors: a component map (an attribution sweep) cut into units gives
the map (the scores) computed in one piece; Ray gives the in-process numbers; a killed actor
and an interrupted run change nothing."""

import json
import sys

import numpy as np
import pytest

from tl_unlearn import component_selectivity_map, load_tiny_model, make_task
from tl_unlearn.benchmark.jobs import AttributionJob, MapJob, attribution_job, component_map_job
from tl_unlearn.execution.units import Unit

JOB = MapJob(model="tiny", tokens=600, seq_len=32, shards=3, batch_size=4, threads=1)


def _same_maps(a, b, exact: bool):
    assert a.components == b.components
    for x, y in zip([a.original, *a.evaluations], [b.original, *b.evaluations]):
        for side in ("forget", "retain"):
            for metric in ("top1", "loss"):
                assert x.metric(side, metric) == pytest.approx(y.metric(side, metric), abs=1e-6)
            if exact:
                assert x[side].units == y[side].units
    if exact:  # the same per-sequence statistics: the same intervals for the same seed
        for x, y in zip(a.evaluations, b.evaluations):
            assert x.drop_intervals(a.original, "top1") == y.drop_intervals(b.original, "top1")


@pytest.fixture(scope="module")
def inprocess():
    return component_map_job(JOB, progress=False)


def test_units_are_json_and_cover_every_component_and_shard():
    units = JOB.units((2, 4, False))
    assert len(units) == 3 * (1 + 8)
    assert [Unit.from_dict(json.loads(json.dumps(u.to_dict()))) for u in units] == units
    assert MapJob.from_dict(json.loads(json.dumps(JOB.to_dict()))) == JOB


def test_sharded_map_equals_the_map_in_one_piece(inprocess):
    """Independent reference: component_selectivity_map on the same data in one process."""
    model = load_tiny_model()
    data = make_task().tokenize(model.tokenizer, "eval", seq_len=32, max_tokens=600, seed=0)
    whole = component_selectivity_map(model, data, "heads", progress=False, batch_size=4)
    _same_maps(inprocess, whole, exact=False)
    for x, y in zip(inprocess.evaluations, whole.evaluations):  # same sequences, same order
        for side in ("forget", "retain"):
            assert np.allclose(x[side].units["top1"], y[side].units["top1"])
    assert inprocess.info["computed"] == 27 and inprocess.info["read_back"] == 0


def test_interrupted_run_resumes_to_the_same_map(tmp_path, inprocess):
    def stop(n, pool):
        if n == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        component_map_job(JOB, run_dir=tmp_path, progress=False, on_unit=stop)
    assert len(list((tmp_path / "units").glob("*.json"))) == 10
    again = component_map_job(JOB, run_dir=tmp_path, resume=True, progress=False)
    assert again.info["read_back"] == 10 and again.info["computed"] == 17
    _same_maps(again, inprocess, exact=True)
    with pytest.raises(ValueError, match="another job"):
        component_map_job(MapJob(model="tiny", tokens=300), run_dir=tmp_path, progress=False)


def test_bad_input_is_refused_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="executor"):
        component_map_job(JOB, executor="dask")
    with pytest.raises(ValueError, match="run_dir"):
        component_map_job(JOB, resume=True)
    with pytest.raises(ValueError, match="Nothing to resume"):
        component_map_job(JOB, run_dir=tmp_path / "new", resume=True)
    with pytest.raises(ValueError, match="shards"):
        MapJob(shards=0)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ModuleNotFoundError, match=r"tl_unlearn\[ray\]"):
        component_map_job(JOB, executor="ray", progress=False)


def test_ray_equals_inprocess(local_cluster, inprocess):
    cmap = component_map_job(JOB, executor="ray", actors=2, progress=False)
    _same_maps(cmap, inprocess, exact=True)
    assert cmap.info["executor"] == "ray" and cmap.info["retried"] == 0


def test_a_killed_actor_changes_nothing(local_cluster, inprocess):
    def kill(n, pool):
        if n == 5:
            local_cluster.kill(pool.actors[0])

    cmap = component_map_job(JOB, executor="ray", actors=2, progress=False, on_unit=kill)
    assert cmap.info["retried"] >= 1  # its unit went to a new actor
    _same_maps(cmap, inprocess, exact=True)


ATT = AttributionJob(
    model="tiny", forget="ioi", method="eap-ig", examples=12, steps=2, seq_len=32,
    fit_tokens=2000, batch_size=4, shards=3, threads=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def attributed():
    return attribution_job(ATT, progress=False)


def test_sharded_attribution_equals_edge_attribution_on_all_pairs(attributed):
    """Independent reference: edge_attribution over all the pairs in one call."""
    from tl_unlearn import edge_attribution
    from tl_unlearn.benchmark.units import prepare_data

    cfg = ATT.config()
    model = load_tiny_model()
    _, _, ctx = prepare_data(cfg, make_task(cfg.forget, cfg.retain), model)
    clean, corrupted = ctx.forget_fit.head(12), ctx.forget_fit_corrupted.head(12)
    from tl_unlearn.engine.scoring import answer_logit_diff

    ref = edge_attribution(model, clean, corrupted, answer_logit_diff, method="eap-ig", steps=2,
                           batch_size=4)  # fmt: skip
    assert np.abs(ref.scores).max() > 0
    assert np.allclose(attributed.scores, ref.scores, rtol=1e-9, atol=1e-12)
    assert attributed.top(20).edges == ref.top(20).edges
    assert attributed.info["computed"] == 3 and attributed.info["n_examples"] == 12


def test_an_interrupted_attribution_resumes(tmp_path, attributed):
    def stop(n, executor):
        if n == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        attribution_job(ATT, run_dir=tmp_path, progress=False, on_unit=stop)
    again = attribution_job(ATT, run_dir=tmp_path, resume=True, progress=False)
    assert again.info["read_back"] == 2 and again.info["computed"] == 1
    assert np.array_equal(again.scores, attributed.scores)


def test_ray_attribution_equals_inprocess(local_cluster, attributed):
    on_ray = attribution_job(ATT, executor="ray", progress=False)
    assert np.allclose(on_ray.scores, attributed.scores, rtol=1e-9, atol=1e-12)
    assert on_ray.top(20).edges == attributed.top(20).edges


def test_the_local_cluster_listens_on_loopback_only(local_cluster):
    """The cluster tl_unlearn starts (``--ray`` without an address) binds to 127.0.0.1: no
    other machine can reach it. Read from the sockets its processes listen on."""
    psutil = pytest.importorskip("psutil")
    assert local_cluster.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in local_cluster.nodes()} == {"127.0.0.1"}
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    bound = {
        c.laddr.ip
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ours
    }
    assert bound and bound <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, bound
