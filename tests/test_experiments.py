import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from goldfish.cli import EXPERIMENT_MARKER, main
from goldfish.cli import experiment_parser

RUN_KEYS = {"exact_match_rate", "token_match_rate", "rouge_l_mean", "longest_run_mean"}


def _summary(out):
    for f in ("summary.json", "report.md", "report.html"):
        assert (out / f).is_file(), f
    return json.loads((out / "summary.json").read_text())


def _sane(run):
    assert RUN_KEYS <= set(run)
    assert all(0.0 <= run[k] <= 1.0 for k in ("exact_match_rate", "token_match_rate", "rouge_l_mean"))
    assert 0 <= run["longest_run_mean"] <= run["longest_run_max"]


@pytest.mark.slow
def test_demo_quick_pipeline(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "test", "--out", str(out)]) == 0
    s = _summary(out)
    for run in ("control", "standard", "goldfish"):
        _sane(s[run])
    assert {"rouge_gap_closed", "wall_time_s", "settings", "versions"} <= set(s)
    assert s["settings"]["n_docs"] == 4 and s["wall_time_s"] > 0
    assert (out / "rouge_l_hist.png").stat().st_size > 10_000
    assert (out / "models" / "goldfish" / "goldfish.json").is_file() and (out / "audit" / "results.jsonl").is_file()
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'class="diff"' in html
    audit = json.loads((out / "audit" / "summary.json").read_text())
    for run in ("control", "standard", "goldfish"):  # the strong attacker beside greedy, as the audit measured it
        assert s[run]["sampled"] == audit["models"][run]["sampled"] and s[run]["sampled"]["samples"] == 4
        assert s[run]["extraction_probability"] == audit["models"][run]["extraction_probability"]
    assert audit["settings"]["top_p"] == 0.9 and "Greedy against the strong attacker" in html


@pytest.mark.slow
def test_extreme_with_random_and_static(tmp_path):
    out = tmp_path / "ext"
    assert main(["experiment", "extreme", "--preset", "test", "--out", str(out), "--strategies", "random", "static", "hash"]) == 0
    s = _summary(out)
    for run in ("control", "random", "static", "goldfish"):
        _sane(s[run])
    assert "rouge_gap_closed" not in s  # no standard run to compare with


@pytest.mark.slow
def test_duplicated_quick_pipeline(tmp_path):
    out = tmp_path / "dup"
    assert main(["experiment", "duplicated", "--preset", "test", "--out", str(out)]) == 0
    s = _summary(out)
    for run in ("control", "standard", "goldfish k=4"):
        _sane(s[run])
    assert [p["k"] for p in s["per_k"]] == [4]
    mixture = (out / "data" / "mixture.jsonl").read_text().splitlines()
    control = (out / "data" / "control.jsonl").read_text().splitlines()
    assert len(mixture) == len(control) + 2 * 4  # 4 targets inserted twice each


@pytest.mark.slow
def test_budget_quick_pipeline(tmp_path):
    out = tmp_path / "budget"
    assert main(["experiment", "budget", "--preset", "test", "--out", str(out)]) == 0
    s = _summary(out)
    std, gf = s["curves"]["standard"], s["curves"]["goldfish k=4"]
    assert [p["step"] for p in std] == [4, 8]
    for curve in (std, gf):
        assert all(b["input_tokens"] > a["input_tokens"] for a, b in zip(curve, curve[1:]))
        assert all(p["eval_loss"] > 0 for p in curve)
    assert std[-1]["input_tokens"] == gf[-1]["input_tokens"]  # same data, same steps
    ratio = gf[-1]["supervised_tokens"] / std[-1]["supervised_tokens"]
    assert 0.7 < ratio < 0.8  # goldfish k=4 learns from ~3/4 of the targets
    assert (out / "validation_loss.png").is_file()


def _config(name, *argv):
    (cfg,), _ = experiment_parser(name, f"goldfish experiment {name}").parse(list(argv))
    return cfg


def test_config_file_presets_and_errors(tmp_path, capsys):
    f = tmp_path / "exp.toml"
    f.write_text('n_docs = 5\nks = [2, 16]\nout = "x"\n')
    cfg = _config("duplicated", "--preset", "quick", "--config", str(f), "--n-docs", "7")
    assert cfg.n_docs == 7 and cfg.ks == [2, 16] and cfg.steps == 200 and cfg.out == "x"  # flags > file > preset
    y = tmp_path / "exp.yaml"
    y.write_text("epochs: 12\nstrategies: [random, hash]\n")
    cfg = _config("extreme", "--config", str(y))
    assert cfg.epochs == 12 and cfg.strategies == ["random", "hash"] and cfg.lr == 1e-3
    f.write_text("n_dox = 5\n")
    with pytest.raises(ValueError, match="unknown setting 'n_dox'; did you mean n_docs"):
        _config("duplicated", "--config", str(f))
    y.write_text("strategies: [hash, fancy]\n")
    with pytest.raises(ValueError, match="'fancy' is not one of"):
        _config("extreme", "--config", str(y))
    with pytest.raises(ValueError, match="must fit in doc_tokens"):
        _config("extreme", "--prefix-len", "100")
    assert main(["experiment", "chat", "--preset", "fast"]) == 2
    assert main(["experiment", "nope"]) == 2
    err = capsys.readouterr().err
    assert "goldfish experiment chat: error: argument --preset: invalid choice: 'fast'" in err
    assert "invalid choice: 'nope'" in err


def test_base_model_is_cached_and_keyed(monkeypatch):
    import goldfish.train
    from goldfish.experiments.base import base_cache_path, base_model_dir

    cfg = _config("extreme", "--preset", "test")
    first = base_model_dir(cfg, "extreme")
    assert (first / "config.json").is_file() and (first / "tokenizer.json").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached base model was trained again")

    monkeypatch.setattr(goldfish.train, "train", no_training)
    assert base_model_dir(cfg, "extreme") == first == base_cache_path(cfg, "extreme")
    assert base_cache_path(_config("extreme", "--preset", "test", "--seed", "1"), "extreme") != first  # other settings, other key
    assert base_cache_path(_config("extreme", "--preset", "test", "--base-steps", "7"), "extreme") != first


def _figures(summary: dict) -> dict:
    """Every number of a summary but the timings (wall time, throughput), by dotted path."""
    from goldfish.experiments.seeds import _leaves

    return {".".join(p): v for p, v in _leaves(summary) if not any(w in ".".join(p) for w in ("wall_time", "runtime", "per_second"))}


def test_an_experiment_refuses_a_folder_that_is_not_a_previous_run(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "data").mkdir(parents=True)
    (out / "data" / "targets.jsonl").write_text("my own\n")
    (out / "summary.json").write_text("{}")
    assert main(["demo", "--preset", "test", "--out", str(out)]) == 2
    assert f"--out {out} is not empty and is not a previous run of goldfish experiment extreme (it has no " \
           f"{EXPERIMENT_MARKER}); give a new or empty folder" in capsys.readouterr().err
    assert (out / "data" / "targets.jsonl").read_text() == "my own\n" and (out / "summary.json").read_text() == "{}"


@pytest.mark.slow
def test_seeds_aggregate_and_a_seed_reruns_identically_in_another_process(tmp_path):
    out = tmp_path / "seeds"
    (out / "seed-7").mkdir(parents=True)  # a previous run's, with other seeds: replaced whole, nothing of it left
    (out / "seed-7" / "report.md").write_text("k=8")
    (out / EXPERIMENT_MARKER).write_text("{}")
    assert main(["demo", "--preset", "test", "--seeds", "2", "--out", str(out)]) == 0
    assert not (out / "seed-7").exists() and (out / EXPERIMENT_MARKER).is_file()
    s = _summary(out)
    assert s["seeds"] == [0, 1] and set(s["runs"]) == {"0", "1"}
    a = s["aggregate"]["goldfish.rouge_l_mean"]
    assert a["values"] == [s["runs"][k]["goldfish"]["rouge_l_mean"] for k in ("0", "1")]
    assert a["min"] <= a["mean"] <= a["max"] and a["mean"] == pytest.approx(sum(a["values"]) / 2)
    assert "mean [min, max]" in (out / "report.md").read_text()
    # seed 0 again, alone, in a fresh process (its base is the seeds' shared one, built with the first seed): the
    # same figures, to the last bit
    again = tmp_path / "again"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    subprocess.run([sys.executable, "-m", "goldfish.cli", "demo", "--preset", "test", "--seed", "0", "--out", str(again)],
                   check=True, env=env, capture_output=True)
    want, got = _figures(_summary(out / "seed-0")), _figures(_summary(again))
    assert want and got == want


def test_seeds_headline_rows_follow_the_runs_trained(tmp_path, capsys):
    """--k 8 --seeds 2: the headline names the run trained ("goldfish k=8"), and every headline figure is
    one the seeds aggregated (none silently dropped)."""
    from goldfish.experiments import RECIPES

    out = tmp_path / "budget"
    assert main(["experiment", "budget", "--preset", "test", "--k", "8", "--seeds", "2", "--out", str(out)]) == 0
    printed, s = capsys.readouterr().out, _summary(out)
    figures = RECIPES["budget"].load().headline(s["runs"]["0"])
    assert [label for label, _ in figures] == ["standard final validation loss", "goldfish k=8 final validation loss"]
    assert all(path in s["aggregate"] for _, path in figures)
    report = (out / "report.md").read_text()
    assert all(label in printed and label in report for label, _ in figures)
