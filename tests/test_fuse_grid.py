"""Ablation grids: a planted best combination ranks first, a killed grid resumes, k-fold
tables, and the Ray backend gives the same ranking as the local one."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from extract.store import open_store
from fuse.experiments.grid import expand, load_grid, subsets
from fuse.experiments.jobs import RESULT_FILE
from fuse.experiments.runner import run_grid

FPS, AUDIO_HZ = 10.0, 25.0


def _smooth(x: np.ndarray, k: int = 9) -> np.ndarray:
    return np.convolve(x, np.ones(k) / k, mode="same")


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """valence shows in visual ``vgood`` and arousal in audio ``agood``; ``vbad`` and ``abad``
    are noise. So (vgood, agood) is the best combination and (vbad, abad) the worst."""
    root = tmp_path_factory.mktemp("grid")
    rng = np.random.default_rng(0)
    store = open_store(root / "s.zarr", "a")
    for name, modality in (("vgood", "visual"), ("vbad", "visual"), ("agood", "audio"),
                           ("abad", "audio")):
        store.ensure_feature(name, modality=modality, dim=8, extractor="synthetic",
                             config={"name": name})
    rows = []
    proj = rng.standard_normal((1, 8))  # how the signals show in the features (all videos)
    for v in range(12):
        n = 120
        t = np.arange(n) / FPS
        val, aro = _smooth(rng.standard_normal(n)), _smooth(rng.standard_normal(n))
        val, aro = np.tanh(2 * val), np.tanh(2 * aro)
        ta = np.arange(int(n / FPS * AUDIO_HZ)) / AUDIO_HZ
        aro_a = np.interp(ta, t, aro)
        store.write_video("vgood", f"v{v}", val[:, None] @ proj + 0.1 * rng.standard_normal(
            (n, 8)), t)
        store.write_video("vbad", f"v{v}", rng.standard_normal((n, 8)), t)
        store.write_video("agood", f"v{v}", aro_a[:, None] @ proj + 0.1 * rng.standard_normal(
            (len(ta), 8)), ta)
        store.write_video("abad", f"v{v}", rng.standard_normal((len(ta), 8)), ta)
        split = "train" if v < 8 else "val"
        rows += [{"video": f"v{v}", "split": split, "frame": i, "time": t[i],
                  "valence": val[i], "arousal": aro[i]} for i in range(n)]
    labels = root / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root / "s.zarr", labels


def _grid(store: Path, labels: Path, **extra) -> dict:
    return {"base": ["va_lstm"],
            "overrides": {"labels": {"path": str(labels), "format": "csv"},
                          "data": {"stores": [str(store)], "segment_len": 40},
                          "model": {"fusion_dim": 32, "encoder": {"hidden": 32}, "head": [32]},
                          "train": {"epochs": 12, "batch_size": 8, "lr": 3e-3, "threads": 1},
                          "post": {"smooth": False}, "output": {"plots": False}},
            "visual": [["vgood"], ["vbad"]], "audio": [["agood"], ["abad"]], **extra}


def test_subsets_and_expansion(planted, tmp_path):
    assert subsets(["a", "b", "c"], 1, 2) == [["a"], ["b"], ["c"], ["a", "b"], ["a", "c"],
                                             ["b", "c"]]
    spec = load_grid({**_grid(*planted), "seeds": [0, 1], "params": {"train.lr": [1e-3, 3e-3]}})
    jobs = expand(spec, tmp_path)
    assert len(jobs) == 2 * 2 * 2 * 2 and len({j.name for j in jobs}) == len(jobs)
    assert all(j.payload["config"]["train"]["lr"] in (1e-3, 3e-3) for j in jobs)
    with pytest.raises(Exception, match="unknown grid key"):
        load_grid({**_grid(*planted), "seed": [1]})


def test_grid_ranks_the_planted_best_combination_first(planted, tmp_path):
    outcome = run_grid(load_grid(_grid(*planted, seeds=[0, 1], ensemble_top=2)), tmp_path / "g",
                       workers=2, progress=False)
    assert outcome.ok, [r.error for r in outcome.failed]
    top = outcome.ranking.iloc[0]
    assert (top.visual, top.audio) == ("vgood", "agood")
    last = outcome.ranking.iloc[-1]
    assert (last.visual, last.audio) == ("vbad", "abad")
    assert top.val_mean > last.val_mean + 0.3 and top.val_count == 2
    for name in ("results", "ranking", "markdown", "heatmap", "seeds"):
        assert outcome.files[name].is_file(), name
    assert "vgood" in outcome.files["markdown"].read_text()
    assert outcome.best_run is not None and (outcome.best_run / "metrics.json").is_file()
    # the best run of the two best cells, ensembled and scored beside them
    assert outcome.top_runs(2)[0] == outcome.best_run and len(outcome.top_runs(2)) == 2
    result = outcome.ensemble
    assert result is not None and (tmp_path / "g" / "ensemble" / "ensemble.json").is_file()
    assert set(result.scores["val"]) == {"ensemble", *result.names}


def test_killed_grid_resumes_without_rerunning_finished_jobs(planted, tmp_path):
    spec_path = tmp_path / "grid.json"
    spec_path.write_text(json.dumps(_grid(*planted)))
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from fuse.experiments.grid import load_grid
        from fuse.experiments.runner import run_grid
        if __name__ == "__main__":
            spec = load_grid(json.load(open({str(spec_path)!r})))
            run_grid(spec, {str(tmp_path / "g")!r}, workers=1, progress=False)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], start_new_session=True)
    jobs = tmp_path / "g" / "jobs"
    deadline = time.time() + 180
    while (proc.poll() is None and time.time() < deadline
           and len(list(jobs.glob(f"*/{RESULT_FILE}"))) < 1):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in jobs.glob(f"*/{RESULT_FILE}")}
    assert 1 <= len(finished) < 4, finished
    outcome = run_grid(load_grid(_grid(*planted)), tmp_path / "g", workers=1, progress=False)
    status = {r.name: r.status for r in outcome.results}
    assert all(status[name] == "skipped" for name in finished)
    assert sum(s == "done" for s in status.values()) == 4 - len(finished)
    assert all((jobs / n / RESULT_FILE).stat().st_mtime_ns == m for n, m in finished.items())
    assert len(outcome.ranking) == 4


def test_kfold_grid_writes_fold_table(planted, tmp_path):
    spec = load_grid({**_grid(*planted), "visual": [["vgood"]], "audio": [["agood"]],
                      "folds": 3})
    outcome = run_grid(spec, tmp_path / "cv", workers=1, progress=False)
    assert outcome.ok, [r.error for r in outcome.failed]
    folds = outcome.files["folds"].read_text().splitlines()
    assert folds[0].split(",")[-4:] == ["fold0", "fold1", "fold2", "mean"]
    assert outcome.ranking.iloc[0].val_count == 3


def test_ray_grid_matches_local(planted, tmp_path):
    ray = pytest.importorskip("ray")
    spec = load_grid({**_grid(*planted), "visual": [["vgood"], ["vbad"]], "audio": [["agood"]]})
    local = run_grid(spec, tmp_path / "local", workers=1, progress=False)
    try:
        remote = run_grid(spec, tmp_path / "ray", backend="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert remote.ok, [r.error for r in remote.failed]
    cols = ["visual", "audio", "val_mean"]
    a, b = local.ranking[cols], remote.ranking[cols]
    assert list(a.visual) == list(b.visual)
    np.testing.assert_allclose(a.val_mean, b.val_mean, rtol=1e-5)
