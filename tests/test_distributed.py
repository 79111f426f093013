"""Several launched processes (torchrun, which `accelerate launch` runs on GPUs), here two on the CPU with gloo:
the tuning loop's step equals one process's step on the whole batch, the cache is written once by rank 0, and a
chapter run launched twice leaves one page and one set of artifacts. And in one process nothing changes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunestudy import distributed, models, realbase, realfacts, tuning

WORKER = Path(__file__).parent / "data" / "launched.py"


def launch(args, tmp_path, cache_dir=None):
    """Run `args` (a script and its arguments, or -m and a module) in two processes under torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESTUDY_CACHE": str(cache_dir or tmp_path / "cache"),
           "PYTHONWARNINGS": "ignore"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.parametrize("rows, world, expected", [(5, 2, [range(0, 3), range(3, 5)]),
                                                   (4, 2, [range(0, 2), range(2, 4)]),
                                                   (3, 3, [range(0, 1), range(1, 2), range(2, 3)]),
                                                   (7, 1, [range(0, 7)])])
def test_each_process_takes_a_contiguous_share_of_the_rows(rows, world, expected):
    assert [distributed.shard_rows(rows, r, world) for r in range(world)] == expected
    split = torch.arange(rows).tensor_split(world)
    assert [list(s.tolist()) for s in split] == [list(r) for r in expected]


def test_a_batch_smaller_than_the_processes_is_one_line_naming_batch_size(monkeypatch):
    with pytest.raises(ValueError, match=r"^batch_size must be at least the number of processes \(2\), got 1$"):
        distributed.shard_rows(1, 0, 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match=r"^tune_batch must be at least the number of processes \(4\), got 2$"):
        tuning.TuneConfig(batch_size=2).validate({"batch_size": "tune_batch"})
    tuning.TuneConfig(batch_size=4).validate()


def test_the_book_refuses_a_launcher_in_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    """`book` runs chapters in parallel kernels, which cannot share one launch's process group."""
    from tunestudy.__main__ import main
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TUNESTUDY_CACHE", str(tmp_path / "cache"))
    assert main(["book", "--smoke", "--only", "00_measures"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("tunestudy: error: book cannot run under a launcher (2 processes)") and error.count("\n") == 1
    assert not (tmp_path / "cache").exists()


def test_in_one_process_nothing_is_gathered_or_broadcast(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert (distributed.world(), distributed.rank(), distributed.launched(), distributed.is_main()) == (1, 0, False,
                                                                                                        True)
    values = [1, 2]
    assert distributed.gathered(values) is values and distributed.main_decides(values) is values
    distributed.barrier()


def test_two_launched_processes_take_the_step_one_process_takes_on_the_whole_batch(tmp_path):
    sys.path.insert(0, str(WORKER.parent))
    import launched
    launch([str(WORKER), "train", str(tmp_path / "two.pt")], tmp_path)
    two = torch.load(tmp_path / "two.pt")
    assert two["world"] == 2 and two["log"]["processes"] == 2
    rows = [json.loads((tmp_path / f"two.pt.{rank}.json").read_text()) for rank in (0, 1)]
    assert rows == [[3] * 12, [2] * 12]  # each process trained on its share of the five rows, not all of them
    model = models.build_model("tiny", 50, seed=0)
    log = tuning.train_loop(model, [p for p in model.parameters() if p.requires_grad], launched.batches(), 12, 3e-3,
                            desc="one")
    assert "processes" not in log  # one process's log is as it always was
    one, untrained = model.state_dict(), models.build_model("tiny", 50, seed=0).state_dict()
    moved = max((one[k] - untrained[k]).abs().max().item() for k in one)
    differ = max((one[k] - two["weights"][k]).abs().max().item() for k in one)
    assert moved > 1e-2 and differ < 1e-4, (moved, differ)  # trained, and the same training to rounding
    assert two["log"]["loss"] == pytest.approx(log["loss"], rel=1e-5)  # the whole batch's loss, logged
    for mine, theirs in zip(log["group_loss"], two["log"]["group_loss"]):  # per group, over both processes' rows
        assert theirs == pytest.approx(mine, rel=1e-5)


def test_two_launched_processes_build_one_cache_folder_written_by_rank_0(tmp_path):
    launch([str(WORKER), "cache", str(tmp_path / "seen")], tmp_path)
    seen = [json.loads((tmp_path / f"seen.{rank}.json").read_text()) for rank in (0, 1)]
    assert seen[0]["first"] == seen[0]["again"] == seen[1]["first"] == seen[1]["again"]
    assert [s["made_by"] for s in seen] == ["0", "0"]  # both read rank 0's folder
    assert [s["builds"] for s in seen] == [[0], [1]]  # each built once (the training needs all), none on reuse
    assert [s["failed"] for s in seen] == ["broken build"] * 2 and all(s["built"] for s in seen)
    left = sorted(p.name for p in (tmp_path / "cache" / "launched").iterdir() if not p.name.endswith(".lock"))
    assert left == [Path(seen[0]["first"]).name]  # no temporary folders, nothing of the broken build


def test_a_chapter_launched_in_two_processes_leaves_one_page_and_one_set_of_artifacts(tmp_path):
    """Chapter 14 with smoke=True on the tiny stand-in model: every tuned run trained in two processes."""
    os.environ["TUNESTUDY_CACHE"] = str(tmp_path / "cache")
    try:
        facts_file = realfacts.write_facts(tmp_path / "facts.json", ["capital", "currency", "element_symbol"])
        chosen = realbase.pick_facts(realbase.load_fact_file(str(facts_file)),
                                     {"capital": 8, "currency": 8, "element_symbol": 3})
        folder = realbase.stand_in_model(chosen)
    finally:
        del os.environ["TUNESTUDY_CACHE"]
    launch(["-m", "tunestudy", "run", "14_real_base", "--smoke", "-p", "base_model", str(folder),
            "-p", "facts_file", str(facts_file), "-p", "tuned_relations", "capital,currency",
            "-p", "other_relations", "element_symbol", "--output-dir", str(tmp_path / "book")], tmp_path)
    book = tmp_path / "book"
    assert sorted(p.name for p in book.glob("*.ipynb")) == ["14_real_base.ipynb"]
    results = json.loads((book / "results" / "14_real_base.json").read_text())
    runs_ = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "style_run").glob("*/result.json")]
    # with smoke=True every category tunes, so an unknown-set run at a picked rate is that rate's sweep run
    assert len(runs_) == len({(r["answers"], r["method"], r["lr"], r["seed"]) for r in results["by_run"]}) > 0
    assert {r["train_log"]["processes"] for r in runs_} == {2}
    cache_dirs = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_dir()]
    assert not [name for name in cache_dirs if ".tmp-" in name or ".rank" in name]
