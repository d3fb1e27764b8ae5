"""goldfish sweep: the points it trains, its flags and errors, its folder rule, and real runs on tiny models."""

import json
from pathlib import Path

import pytest

from goldfish.cli import main
from goldfish.sweep import SWEEP_FILES, parse_sweep, plan_points, point_config


@pytest.fixture(scope="module")
def docs(tmp_path_factory, tokenizer):
    """(members, non_members): 4 and 8 embedded documents of 40 tokens."""
    from goldfish.embedded.corpus import corpus_part

    root = tmp_path_factory.mktemp("sweep-docs")
    texts = [tokenizer.decode(tokenizer(d["text"], add_special_tokens=False)["input_ids"][:40]) for d in corpus_part("targets")[:12]]
    members, non = root / "members.jsonl", root / "non_members.jsonl"
    members.write_text("".join(json.dumps({"id": f"m{i}", "text": t}) + "\n" for i, t in enumerate(texts[:4])))
    non.write_text("".join(json.dumps({"id": f"n{i}", "text": t}) + "\n" for i, t in enumerate(texts[4:])))
    return members, non


def _argv(docs, out, *extra):
    members, non = docs
    return ["--init", "micro", "--data", str(members), "--non-members", str(non), "--out", str(out), "--max-steps", "4",
            "--lr", "3e-3", "--batch-size", "4", "--samples", "2", "--suffix-len", "8", "--audit-batch", "8", "--report-to", "none",
            "--save-steps", "0", "--no-progress", *extra]


def test_points_and_their_train_settings(tmp_path, docs):
    assert [p.name for p in plan_points([2, 8], protect=False, align=False)] == ["standard", "k=2", "k=8"]
    points = plan_points([4], protect=True, align=True)
    assert [(p.name, p.family) for p in points] == [
        ("standard", "standard"), ("standard+protect", "standard + protect"), ("k=4", "goldfish"),
        ("k=4+protect", "goldfish + protect"), ("k=4+protect+align", "goldfish + protect + align")]
    assert [p.name for p in plan_points([4], protect=False, align=True)] == ["standard", "k=4", "k=4+align"]
    secrets = tmp_path / "secrets.txt"
    secrets.write_text("Dana Whitlock\n")
    train, args = parse_sweep(_argv(docs, tmp_path / "out", "--ks", "4", "--protect", str(secrets), "--with-align", "--h", "7",
                                    "--lr", "2e-3"))
    configs = {p.name: point_config(train, p, tmp_path / p.name) for p in points}
    got = {n: (c.mask.strategy, c.mask.k, list(c.mask.protect), c.mask.near_duplicates) for n, c in configs.items()}
    assert got == {"standard": ("none", 4, [], "off"), "standard+protect": ("none", 4, [str(secrets)], "off"),
                   "k=4": ("hash", 4, [], "off"), "k=4+protect": ("hash", 4, [str(secrets)], "off"),
                   "k=4+protect+align": ("hash", 4, [str(secrets)], "align")}
    for name, c in configs.items():  # every other train setting passes through to every point
        assert (c.mask.h, c.training.learning_rate, c.training.max_steps, c.out) == (7, 2e-3, 4, str(tmp_path / name))


def test_config_file_passes_through(tmp_path, docs):
    members, non = docs
    (tmp_path / "sweep.yaml").write_text(f"init: micro\ndata: [{members}]\nnon_members: {non}\nks: [3, 5]\nlr: 1.0e-3\n"
                                         f"output_dir: {tmp_path / 'o'}\ntarget: longest_run_mean<=4\n")
    train, args = parse_sweep(["--config", str(tmp_path / "sweep.yaml"), "--ks", "6"])
    assert args.ks == [6] and args.target == "longest_run_mean<=4" and train.training.learning_rate == 1e-3
    assert train.data.data == [str(members)]


@pytest.mark.parametrize("extra,message", [
    (["--strategy", "none"], "the standard loss (none) is always trained as the reference"),
    (["--ks", "1", "4"], "every k must be >= 2"),
    (["--ks", "4", "4"], "a k is given twice"),
    (["--k", "3"], "--k: the sweep trains one model per k: give --ks"),
    (["--near-duplicates", "align"], "also align with --with-align"),
    (["--resume"], "a sweep is not resumed"),
    (["--target", "longest_run_man<=3"], "unknown measure 'longest_run_man'; did you mean longest_run_mean"),
    (["--target", "any_verbatim_count<=0", "--samples", "0"], "give --samples N"),
    (["--with-align", "--strategy", "static"], "needs --strategy hash"),
])
def test_bad_sweeps_are_refused_before_anything_is_written(tmp_path, docs, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["sweep", *_argv(docs, out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_non_members_and_foreign_out_folder_are_refused(tmp_path, docs, capsys):
    argv = _argv(docs, tmp_path / "out")
    i = argv.index("--non-members")
    assert main(["sweep", *argv[:i], *argv[i + 2:]]) == 2
    assert "give the held-out documents: --non-members FILE" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(["sweep", *argv]) == 2
    assert "holds files that are not a sweep's (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert main(["sweep", *_argv(docs, tmp_path / "o2"), "--data", str(docs[1])]) == 2  # two --data sources, no --audit-data
    assert "give one --data source (got 2)" in capsys.readouterr().err


def test_a_failed_sweep_leaves_the_previous_one(tmp_path, docs, monkeypatch):
    import goldfish.train

    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"previous": true}\n')
    real, calls = goldfish.train.train, []

    def second_fails(cfg, *a, **kw):
        calls.append(cfg.out)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(cfg, *a, **kw)

    monkeypatch.setattr(goldfish.train, "train", second_fails)
    with pytest.raises(RuntimeError, match="killed"):
        main(["sweep", *_argv(docs, out, "--ks", "2")])
    assert len(calls) == 2 and sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert json.loads((out / "summary.json").read_text()) == {"previous": True}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp folder left beside it


@pytest.mark.slow
def test_sweep_end_to_end(tmp_path, docs, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "report.md").write_text("an older sweep's report")  # a previous sweep's folder is replaced whole
    assert main(["sweep", *_argv(docs, out, "--ks", "2", "8")]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(set(SWEEP_FILES) - {"benchmarks"})  # no --benchmarks
    assert sorted(p.name for p in (out / "models").iterdir()) == ["k=2", "k=8", "standard"]
    s = json.loads((out / "summary.json").read_text())
    audit = json.loads((out / "audit" / "summary.json").read_text())
    assert audit["baseline"] == "standard" and list(audit["models"]) == ["standard", "k=2", "k=8"]
    for name, k in (("standard", None), ("k=2", 2), ("k=8", 8)):
        record = json.loads((out / "models" / name / "goldfish.json").read_text())
        assert record["goldfish"]["strategy"] == ("none" if k is None else "hash") and record["settings"]["output_dir"] == str(out / "models" / name)
        if k is not None:
            assert record["goldfish"]["k"] == k and record["tokens_per_epoch"]["dropped_targets"] > 0
    # the recommendation, recomputed from the audit's own summary: the largest k with no document verbatim in any
    # sample, a best-of-2 longest run of at most h = 13 on average, and no utility flag
    ok = [k for name, k in (("k=2", 2), ("k=8", 8)) if audit["models"][name]["sampled"]["any_verbatim_count"] == 0
          and audit["models"][name]["sampled"]["best_longest_run_mean"] <= 13 and not audit["models"][name]["utility"]["flags"]]
    assert s["recommended_k"] == (max(ok) if ok else None)
    assert s["target"] == "any_verbatim_count <= 0 and best_longest_run_mean <= 13" and not s["target_given"]
    for p in s["points"]:
        a = audit["models"][p["name"]]
        assert p["intervals"]["run"][0] == pytest.approx(a["sampled"]["best_longest_run_mean"])
        assert p["intervals"]["verbatim"][0] == pytest.approx(a["sampled"]["any_verbatim_rate"])
        change = a["utility"].get("vs_baseline", {}).get("heldout_loss_change_ordinary")  # the part the flag reads
        assert p["heldout_loss_change"] == (0.0 if p["name"] == "standard" else pytest.approx(change["relative"]))
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "frontier.png" in (out / "report.md").read_text() and "an older sweep" not in (out / "report.md").read_text()
    assert f"recommended k: {'none meets the target' if s['recommended_k'] is None else format(s['recommended_k'], 'g')}" in printed
    assert str(out) in (out / "audit" / "summary.json").read_text() and ".tmp" not in (out / "audit" / "summary.json").read_text()
    assert s["benchmarks_verdict"] is None and not (out / "benchmarks").exists()
    # a target the user gives (no point lowers the held-out loss by 100%), and the benchmarks
    assert main(["sweep", *_argv(docs, out, "--ks", "2", "--target", "heldout_loss_change<=-100%", "--benchmarks",
                                 "--benchmark-limit", "4")]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["recommended_k"] is None and s["target_given"]
    assert [p["meets_target"] for p in s["points"]] == [False, False]
    assert [p["failed"] for p in s["points"]][1][0].startswith("heldout_loss_change = ")
    bench = json.loads((out / "benchmarks" / "summary.json").read_text())
    for p in s["points"]:
        for task, b in p["benchmarks"].items():
            assert b["score"] == bench["models"][p["name"]][task]["metrics"][b["metric"]]["score"]
            assert (b["delta"] is None) == (p["name"] == "standard")
    assert "goldfish eval" in (out / "report.md").read_text()


@pytest.mark.slow
def test_experiment_sweep_runs_the_sweep(tmp_path):
    out = tmp_path / "exp"
    assert main(["experiment", "sweep", "--preset", "test", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert list(s["frontier"]) == ["standard", "k=2", "k=8"] and "recommended_k" in s
    assert (out / "sweep" / "frontier.png").is_file() and (out / "frontier.png").is_file()
    sweep = json.loads((out / "sweep" / "summary.json").read_text())
    assert sweep["settings"]["sweep"]["samples"] == 4 and sweep["settings"]["sweep"]["top_p"] == 0.9
    assert sweep["recommended_k"] == s["recommended_k"]
