"""goldfish.frontier: the target expressions, the measures read from an audit summary, the recommendation."""

import pytest

from goldfish.frontier import Clause, check, default_target, measures, parse_target, recommend


def test_target_clauses_are_read_with_their_spellings():
    clauses = parse_target("p_exact_discoverable@1000<=0, longest_run_mean < 13 and heldout_loss_change<=5%", True, True)
    assert clauses == [Clause("p_exact_discoverable@1000:0.5", "<=", 0.0), Clause("longest_run_mean", "<", 13.0),
                       Clause("heldout_loss_change", "<=", 0.05)]
    assert parse_target("p_exact_discoverable@10:0.90 >= 1e-1", True, True) == [Clause("p_exact_discoverable@10:0.9", ">=", 0.1)]
    assert parse_target(default_target(13, True), True, True) == [Clause("any_verbatim_count", "<=", 0),
                                                                   Clause("best_longest_run_mean", "<=", 13)]
    assert [c.measure for c in parse_target(default_target(7, False), False, False)] == ["verbatim_count", "longest_run_mean"]
    text = " and ".join(map(str, clauses))  # what summary.json records reads back to the same clauses
    assert parse_target(text, True, True) == clauses


@pytest.mark.parametrize("text,sampled,probability,message", [
    ("longest_run_man<=3", True, True, "unknown measure 'longest_run_man'; did you mean longest_run_mean"),
    ("longest_run_mean", True, True, "cannot read 'longest_run_mean': want MEASURE OP NUMBER"),
    ("longest_run_mean => 3", True, True, "cannot read"),
    ("", True, True, "--target is empty"),
    ("p_exact_discoverable@7<=0", True, True, "N in 1, 10, 100, 1000, 1000000 and P in 0.1, 0.5, 0.9"),
    ("p_exact_discoverable@10:0.3<=0", True, True, "P in 0.1, 0.5, 0.9"),
    ("any_verbatim_count<=0", False, True, "any_verbatim_count is a sampled-extraction measure: give --samples N"),
    ("p_exact_discoverable@1000<=0", True, False, "leave out --no-extraction-probability"),
    ("longest_run_mean@5<=1", True, True, "unknown measure"),
])
def test_bad_targets_are_refused_naming_the_clause(text, sampled, probability, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_target(text, sampled, probability)


def _summary(runs, best, any_verbatim, change, log10=None, flags=()):
    s = {"exact_match_count": 0, "exact_match_rate": 0.0, "longest_run_mean": sum(runs) / len(runs), "longest_run_max": max(runs),
         "utility": {"flags": list(flags), "vs_baseline": {"heldout_loss_change_ordinary": {"relative": change, "ci": [change - 0.01, change + 0.01]}}},
         "sampled": {"any_verbatim_count": any_verbatim, "any_verbatim_rate": any_verbatim / len(runs), "sample_verbatim_rate": 0.0,
                     "best_longest_run_mean": best, "best_longest_run_max": int(best) + 1}}
    if log10 is not None:
        s["extraction_probability"] = {"log10_p_exact_median": log10, "log10_p_exact_max": None if log10 is None else log10,
                                       "discoverable": {str(n): {str(p): 0.25 for p in (0.1, 0.5, 0.9)} for n in (1, 10, 100, 1000, 10**6)}}
    return s


def test_measures_and_check_read_the_audit_summary():
    values = measures(_summary([4, 10], 14.5, 1, 0.031, log10=-3.0), reference=False)
    assert values["longest_run_mean"] == 7 and values["best_longest_run_mean"] == 14.5 and values["heldout_loss_change"] == 0.031
    assert values["p_exact_discoverable@1000:0.5"] == 0.25 and values["log10_p_exact_max"] == -3.0
    assert measures(_summary([4], 4, 0, 0.5), reference=True)["heldout_loss_change"] == 0.0  # the reference against itself
    assert check(parse_target("longest_run_mean<=7, best_longest_run_mean<15", True, True), values) == []
    assert check(parse_target(default_target(13, True), True, True), values) == [
        "any_verbatim_count = 1, not <= 0", "best_longest_run_mean = 14.5, not <= 13"]
    greedy_only = measures(_summary([1], 1, 0, 0.0), reference=False) | {"best_longest_run_mean": None}
    assert check([Clause("best_longest_run_mean", "<=", 13)], greedy_only) == ["best_longest_run_mean not measured"]
    assert check([Clause("p_exact_discoverable@1:0.5", "<=", 0)], greedy_only) == ["p_exact_discoverable@1:0.5 not measured"]


def test_recommend_takes_the_largest_k_that_meets_the_target_unflagged():
    points = [{"k": 2, "meets_target": True, "flags": []}, {"k": 4, "meets_target": True, "flags": []},
              {"k": 8, "meets_target": True, "flags": ["held-out loss"]}, {"k": 16, "meets_target": False, "flags": []}]
    assert recommend(points)["k"] == 4
    assert recommend([p | {"meets_target": False} for p in points]) is None
