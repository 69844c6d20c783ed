"""Paired bootstrap comparison (`lesionprop compare`) and the pooling over runs."""

import json

import numpy as np
import pytest
from helpers import load_benchmark, make_lesion, random_world, slice_name, to_preds, write_world

from lesionprop.cli import main
from lesionprop.eval.bootstrap import draw_weights, resampled_sensitivity
from lesionprop.eval.compare import compare, paired_comparison, pooled_comparison
from lesionprop.eval.froc import evaluate

FPS = (0.5, 1.0, 2.0, 4.0, 8.0)


def test_identical_predictions_differ_by_exactly_zero():
    lesions, rows = random_world(np.random.default_rng(1), 15)
    c = compare(lesions, [to_preds(rows), to_preds(rows)], ["a", "b"], n_boot=200, seed=3)
    assert (c.diff[1] == 0).all() and (c.diff_low[1] == 0).all() and (c.diff_high[1] == 0).all()
    assert (c.p_gt_0[1] == 0).all() and c.mean_diff[1] == 0 and (c.mean_diff_ci[1] == 0).all()
    assert (c.ci_low[0] == c.ci_low[1]).all() and (c.ci_low[0] < c.ci_high[0]).any()


def test_hand_computed_paired_bootstrap_on_three_patients():
    # A: p1 lesion found at 0.9, p2 FP 0.8 then its lesion 0.7, p3 FP 0.6 (its lesion missed).
    # B: the same plus p3's lesion found at 0.65.  At 1 FP per image B finds every lesion of every
    # resample; A's value per multiset of patients (n1, n2, n3) is worked out in test_bootstrap.
    les = [make_lesion(slice_name(p, 10), (0, 0, 10, 10), split=3) for p in (1, 2, 3)]
    a = [(1, 10, (0, 0, 10, 10), 0.9), (2, 10, (100, 100, 110, 110), 0.8), (2, 10, (0, 0, 10, 10), 0.7),
         (3, 10, (100, 100, 110, 110), 0.6)]
    b = a + [(3, 10, (0, 0, 10, 10), 0.65)]
    a_by_hand = {(3, 0, 0): 1, (0, 3, 0): 1, (0, 0, 3): 0, (2, 1, 0): 1, (2, 0, 1): 2 / 3, (1, 2, 0): 1,
                 (0, 2, 1): 2 / 3, (1, 0, 2): 1 / 3, (0, 1, 2): 1 / 3, (1, 1, 1): 2 / 3}
    c = compare(les, [to_preds(a), to_preds(b)], ["A", "B"], fps=(1.0,), level=0.9, n_boot=50, seed=11)
    diffs = np.array([1 - a_by_hand[tuple(w)] for w in draw_weights(3, 50, 11).tolist()])
    assert c.diff[1].tolist() == pytest.approx([1 / 3])
    lo, hi = np.quantile(diffs, [0.05, 0.95])
    assert (c.diff_low[1][0], c.diff_high[1][0]) == pytest.approx((lo, hi))
    assert c.p_gt_0[1][0] == pytest.approx(np.mean(diffs > 0))
    np.testing.assert_allclose(c.sensitivity, [[2 / 3], [1.0]])
    d = c.to_dict()
    assert d["names"] == ["A", "B"] and d["fps"] == [1.0] and set(d["differences"]) == {"B"}
    assert set(d["variants"]["A"]) == {"sensitivity", "ci_low", "ci_high", "mean", "mean_ci"}
    assert set(d["differences"]["B"]) == {"diff", "ci_low", "ci_high", "p_gt_0", "mean_diff", "mean_ci",
                                          "mean_p_gt_0"}


def test_more_patients_give_a_narrower_difference_interval():
    widths = []
    for n in (12, 192):
        lesions, rows = random_world(np.random.default_rng(9), n, hit_rate=0.5)
        _, rows_b = random_world(np.random.default_rng(9), n, hit_rate=0.7)   # same lesions, more hits
        c = compare(lesions, [to_preds(rows), to_preds(rows_b)], ["a", "b"], n_boot=300, seed=0)
        widths.append(c.mean_diff_ci[1, 1] - c.mean_diff_ci[1, 0])
    assert widths[1] < 0.5 * widths[0]      # 16x the patients: about a quarter


def test_pooled_comparison_resamples_each_run_within_itself_and_averages():
    runs = []
    for s in (0, 1):
        lesions, rows = random_world(np.random.default_rng(20 + s), 6 + 3 * s)
        _, rows_b = random_world(np.random.default_rng(20 + s), 6 + 3 * s, hit_rate=0.8)
        runs.append([evaluate(lesions, to_preds(r), fps=FPS).outcomes for r in (rows, rows_b)])
    pooled = pooled_comparison(runs, ["base", "new"], FPS, n_boot=30, seed=5)
    rng = np.random.default_rng(5)
    per_run = []
    for r in runs:
        w = draw_weights(r[0].units.size, 30, rng)
        per_run.append([resampled_sensitivity(o, w, FPS) for o in r])
    diff = np.mean([p[1] - p[0] for p in per_run], axis=0)
    np.testing.assert_allclose(pooled.diff_low[1], np.quantile(diff, 0.025, axis=0), rtol=1e-12)
    single = [paired_comparison(r, ["base", "new"], FPS, n_boot=30, seed=0) for r in runs]
    np.testing.assert_allclose(pooled.sensitivity, np.mean([s.sensitivity for s in single], axis=0))
    assert pooled.units == 6 + 9 and pooled.images == sum(s.images for s in single)


def test_compare_cli_table_json_plot_and_errors(tmp_path, capsys):
    lesions, rows = random_world(np.random.default_rng(2), 10)
    _, rows_b = random_world(np.random.default_rng(2), 10, hit_rate=0.8)
    ann, p0 = write_world(tmp_path, lesions, rows, "base.csv")
    _, p1 = write_world(tmp_path, lesions, rows_b, "better.csv")
    base = ["compare", "--annotations", str(ann), "--predictions", str(p0), str(p1), "--bootstrap", "100"]
    assert main(base + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["names"] == ["base", "better"] and out["fps"] == list(FPS)
    ref = compare(lesions, [to_preds(rows), to_preds(rows_b)], ["base", "better"], n_boot=100, seed=0).to_dict()
    assert out == json.loads(json.dumps(ref))
    png = tmp_path / "forest.png"
    assert main(base + ["--names", "b0,b1", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "difference to b0" in text and "mean 0.5-8" in text and text.count("\n") >= 6
    assert png.stat().st_size > 2000
    assert main(base + ["--names", "only_one"]) == 2
    assert "--names needs 2" in capsys.readouterr().err
    assert main(base[:4] + [str(p0)]) == 2
    assert main(base + ["--plot", str(p0)]) == 2              # never overwrites an input


def test_bench_pipeline_pools_the_seeds_run_folders(tmp_path):
    bench_pipeline = load_benchmark("bench_pipeline")

    from lesionprop.annotations import write_annotations

    runs, expected = {}, []
    for seed in (0, 1):
        run = tmp_path / f"phantom_seed{seed}"
        (run / "data").mkdir(parents=True)
        (run / "preds").mkdir()
        (run / "report").mkdir()
        lesions, _ = random_world(np.random.default_rng(seed), 8)
        write_annotations(run / "data" / "DL_info.csv", lesions)
        write_annotations(run / "data" / "truth.csv", lesions)
        outs = []
        for i, v in enumerate(bench_pipeline.VARIANTS):
            _, rows = random_world(np.random.default_rng(seed), 8, hit_rate=0.3 + 0.1 * i)
            write_world(run / "preds", lesions, rows, f"test_{v}.csv")
            outs.append(evaluate(lesions, to_preds(rows), fps=FPS).outcomes)
        expected.append(outs)
        quality = {"boxes": 3, "correct": 2, "precision": 2 / 3, "missing_targets": 4, "missing_recovered": 1,
                   "missing_recall": 0.25, "neighbour_targets": 0, "neighbour_recovered": 0, "neighbour_recall": None}
        table = {"variants": {v: {"sensitivity": [0.5] * 5} for v in bench_pipeline.VARIANTS},
                 "truth": {"variants": {v: {"sensitivity": [0.25] * 5} for v in bench_pipeline.VARIANTS}},
                 "label_quality": {"lp": quality}}
        (run / "report" / "table.json").write_text(json.dumps(table))
        runs[seed] = run
    summary = bench_pipeline.summarize_background(runs, 40, 3)
    ref = pooled_comparison(expected, bench_pipeline.VARIANTS, FPS, n_boot=40, seed=3).to_dict()
    assert summary["official"]["differences"] == json.loads(json.dumps(ref["differences"]))
    assert summary["truth"]["variants"]["lp"] == summary["official"]["variants"]["lp"]   # truth = the same rows
    assert summary["official"]["per_seed"]["1"]["mm"] == [0.5] * 5
    md = bench_pipeline.markdown("phantom", summary, "official", "official labels")
    assert "Paired difference to the baseline" in md and md.count("| mm_lp |") == 2
    q = bench_pipeline.quality_markdown("phantom", summary)
    assert "| 1 | lp | 3 | 66.7% | 1/4 (25.0%) | 0/0 (n/a) |" in q


def test_compare_plot_path_is_checked_before_any_work(tmp_path, capsys):
    folder = tmp_path / "adir"
    folder.mkdir()
    base = ["compare", "--annotations", str(tmp_path / "no.csv"), "--predictions", str(tmp_path / "a.csv"),
            str(tmp_path / "b.csv")]
    assert main(base + ["--plot", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert err == f"lesionprop compare: error: --plot {folder} is a folder; give a file name\n" and out == ""
    assert main(base + ["--plot", str(tmp_path / "forest.xyz")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and f"--plot {tmp_path / 'forest.xyz'}: matplotlib cannot write .xyz files" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
