import subprocess
import sys

from goldfish.cli import main

GOLDFISH = [sys.executable, "-m", "goldfish.cli"]


def test_mask_plain_markers_when_piped():
    out = subprocess.run([*GOLDFISH, "mask", "--embedded", "targets:0", "--max-tokens", "60"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[[" in out.stdout and "\x1b[" not in out.stdout
    assert "of 60 targets" in out.stdout and "strategy=hash k=4 h=13 seed=0" in out.stdout


def test_mask_text_argument_and_rate(capsys):
    text = "The quick brown fox jumps over the lazy dog. " * 40
    assert main(["mask", text, "--k", "2", "--plain"]) == 0
    out = capsys.readouterr().out
    shown = out.split("\n\ndropped")[0]
    assert shown.replace("[[", "").replace("]]", "") == text  # every character shown once, in order
    assert "expected 50.0%" in out


def test_mask_file_and_errors(tmp_path, capsys):
    f = tmp_path / "t.txt"
    f.write_text("hello world, this is a file")
    assert main(["mask", "--file", str(f), "--plain", "--strategy", "static"]) == 0
    assert main(["mask", "--k", "1", "text"]) == 2
    assert main(["mask"]) == 2
    assert main(["mask", "--embedded", "targets:100000"]) == 2
    assert main(["mask", "x", "--tokenizer", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "k must be a finite number >= 2" in err and "exactly one of TEXT" in err
    assert "INDEX in 0.." in err and "not a HF tokenizer folder" in err


def test_mask_near_duplicates_side_by_side(capsys):
    """--near-duplicates align: two fills of one template drop the same tokens after their slots."""
    fills = ("Ana", "40213"), ("Bartholomew", "7")
    texts = [f"Hi {n}, your refund for order #{o} has been approved. The money will be back on your card within five business days."
             for n, o in fills]
    tails = {}
    for rule in ("off", "align"):
        assert main(["mask", *texts, "--near-duplicates", rule, "--plain"]) == 0
        out = capsys.readouterr().out
        shown = [line for line in out.splitlines() if line.startswith("Hi ")]
        assert len(shown) == 2
        tails[rule] = [line.split("order #", 1)[1].split(" has", 1)[1] for line in shown]
    assert tails["align"][0] == tails["align"][1] and tails["off"][0] != tails["off"][1]
    assert "goldfish-align-v1 on these 2 texts: 1 cluster(s) holding 2 of them" in out


def test_mask_near_duplicates_wants_two_texts(capsys):
    assert main(["mask", "one text only, long enough to be a passage of its own", "--near-duplicates", "align"]) == 2
    assert "two or more TEXTs" in capsys.readouterr().err


def test_protect_before_the_text_takes_one_value(capsys):
    assert main(["mask", "--plain", "--protect", "builtin", "Write to dana@example.com today"]) == 0
    out = capsys.readouterr().out
    assert "{{" in out and "dana@example.com" in out.replace("[[", "").replace("]]", "").replace("{{", "").replace("}}", "")
    assert main(["mask", "--plain", "--protect", "builtin", "--protect", "builtin", "a@b.org"]) == 0
