import pytest

from goldfish.audit.secret_scan import secret_rates, training_values
from goldfish.data.chat import supervised_runs
from goldfish.secrets import BUILTIN_DETECTORS, load_secrets

TEXT = ("Call Dana Whitlock at +1 (415) 555-0199 or dana.whitlock@meridian-help.example, see https://x.example/a?b=1. "
        "Server 10.0.0.1, card 4111 1111 1111 1111, key sk-abcdef1234567890XYZ; in 2024 we sold 13 chairs.")


def test_builtin_detectors_find_each_kind_and_not_plain_numbers():
    found = {s.name: s.find(TEXT) for s in load_secrets(["builtin"])}
    assert set(found) == set(BUILTIN_DETECTORS)
    assert found["email"] == {"dana.whitlock@meridian-help.example"} and found["phone"] == {"+1 (415) 555-0199"}
    assert found["url"] == {"https://x.example/a?b=1"} and found["ipv4"] == {"10.0.0.1"}
    assert found["card"] == {"4111 1111 1111 1111"} and found["api_key"] == {"sk-abcdef1234567890XYZ"}
    assert not any(s.find("in 2024 we sold 13 chairs for 250 dollars") for s in load_secrets(["builtin"]))


def test_secret_file_literals_regexes_and_errors(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("Dana Whitlock\n\nre:\\d{3}-\\d{4}\nDana Whitlock\n")
    secrets = load_secrets([str(f)])
    assert [s.name for s in secrets] == ["Dana Whitlock", "re:\\d{3}-\\d{4}"]
    assert secrets[0].find(TEXT) == {"Dana Whitlock"} and secrets[1].find(TEXT) == {"555-0199"}
    assert secrets[0].spans("a Dana Whitlock b") == [(2, 15)]
    f.write_text("re:(unclosed\n")
    with pytest.raises(ValueError, match="s.txt:1: not a valid regex"):
        load_secrets([str(f)])
    with pytest.raises(ValueError, match="no such file"):
        load_secrets([str(tmp_path / "missing.txt")])


def test_recall_and_spill():
    secrets = load_secrets(["builtin"])
    rows = [  # true reply, generation
        {"true_text": "mail a@b.example now", "generated_text": "mail a@b.example now"},
        {"true_text": "mail c@d.example now", "generated_text": "mail someone"},
        {"true_text": "the weather is fine", "generated_text": "write to a@b.example"},
        {"true_text": "the weather is fine", "generated_text": "write to x@y.example"},  # an email never trained on
        {"true_text": "the weather is fine", "generated_text": "sunny"},
    ]
    email = secret_rates(rows, secrets, training_values(rows[:2], secrets))["email"]
    assert email["recall"] == 0.5 and email["turns_with_secret"] == 2
    assert email["spill"] == pytest.approx(1 / 3) and email["turns_without"] == 3


def test_supervised_runs():
    assert supervised_runs([-100, 5, 6, -100, -100, 7]) == [(1, 3), (5, 6)]
    assert supervised_runs([-100, -100]) == []


def test_a_secrets_line_with_a_bom_or_trailing_spaces_is_the_secret_itself(tmp_path):
    f = tmp_path / "s.txt"
    f.write_bytes("\ufeffDana Whitlock \n  re:\\d{3}-\\d{4}\t\r\n".encode("utf-8"))  # an editor's BOM, stray spaces, CRLF
    secrets = load_secrets([str(f)])
    assert [s.name for s in secrets] == ["Dana Whitlock", "re:\\d{3}-\\d{4}"]
    assert secrets[0].find(TEXT) == {"Dana Whitlock"} and secrets[1].find(TEXT) == {"555-0199"}


def test_secret_summary_reads_its_rows_and_leaked_secrets_names_each_generations_training_secrets():
    import copy

    from goldfish.audit.summary import leaked_secrets, secret_summary

    secrets = load_secrets(["builtin"])
    rows = [{"member": True, "true_text": "mail a@b.example now", "generated_text": "mail a@b.example or 10.0.0.9"},
            {"member": True, "true_text": "mail c@d.example now", "generated_text": "mail someone"},
            {"member": False, "true_text": "the weather is fine", "generated_text": "write to c@d.example, a@b.example"},
            {"member": False, "true_text": "not decoded", "nll": 1.0}]
    before = copy.deepcopy(rows)
    s = secret_summary(rows, secrets)
    assert rows == before  # nothing written into the input
    assert s["email"]["recall"] == 0.5 and s["email"]["non_members"]["spill"] == 1.0
    assert leaked_secrets(rows, secrets) == [["a@b.example"], [], ["a@b.example", "c@d.example"], None]
    assert rows == before
