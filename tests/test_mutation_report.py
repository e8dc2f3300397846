"""scripts/mutation_report.py: mutmut's results summed per module, explanations applied, the summary line."""

from __future__ import annotations

import json

from repo_scripts import load_script


def test_results_are_summed_per_module_and_explanations_are_applied(tmp_path):
    script = load_script("mutation_report")
    meta = tmp_path / "mutants" / "sftkit"
    meta.mkdir(parents=True)
    # mutmut's exit codes: 1 killed, 0 survived, 33 no tests, 36 timeout, None not checked.
    (meta / "metrics.py.meta").write_text(json.dumps({"exit_code_by_key": {
        "sftkit.metrics.x_stop_rate__mutmut_1": 1, "sftkit.metrics.x_stop_rate__mutmut_2": 0,
        "sftkit.metrics.x_stop_rate__mutmut_3": 0, "sftkit.metrics.x_stop_rate__mutmut_4": 33,
        "sftkit.metrics.x_stop_rate__mutmut_5": 36}}))
    (meta / "chat.py.meta").write_text(json.dumps({"exit_code_by_key": {
        "sftkit.chat.xǁTurnFormatǁrender__mutmut_1": 1, "sftkit.chat.x_render__mutmut_2": None}}))
    explanations = tmp_path / "equivalents.toml"
    explanations.write_text('[equivalent]\n"sftkit.metrics.x_stop_rate__mutmut_2" = "same value"\n'
                            '"sftkit.metrics.x_gone__mutmut_1" = "stale"\n'
                            '[not_killed]\n"sftkit.metrics.x_stop_rate__mutmut_3" = "a GPU-only branch"\n')
    results = script.read_results(tmp_path / "mutants")
    assert results["sftkit.metrics.x_stop_rate__mutmut_4"] == "no tests"
    assert results["sftkit.chat.x_render__mutmut_2"] == "not checked"
    assert script.module_of("sftkit.chat.xǁTurnFormatǁrender__mutmut_1") == "sftkit/chat.py"
    assert script.function_of("sftkit.chat.xǁTurnFormatǁrender__mutmut_1") == "TurnFormat.render"
    equivalents, not_killed = script.load_explanations(explanations)
    out = tmp_path / "mutation.md"
    total = script.write_report(results, equivalents, not_killed, out, wall_s=600)
    # survived: the unexplained survivor and the one no test runs; the equivalent one is not counted.
    assert (total["killed"], total["open"], total["timeout"], total["equivalent"]) == (2, 2, 1, 1)
    report = out.read_text()
    assert "| sftkit/metrics.py | 5 | 1 | 1 | 1 | 1 | 0 | 1 |" in report
    assert "| sftkit/chat.py | 2 | 1 | 0 | 0 | 0 | 1 | 0 |" in report
    assert "Killed 2 of 6 non-equivalent mutants (33.3%; timeouts count as not killed)." in report
    assert "Not killed: a GPU-only branch" in report
    assert "- `sftkit.metrics.x_stop_rate__mutmut_2`: same value" in report
    assert "- `sftkit.metrics.x_gone__mutmut_1`" in report.split("match no surviving mutant")[1]
