"""Bootstrap over patients: the one-cumsum resampling equals actually resampling and re-evaluating."""

import numpy as np
import pytest

from helpers import make_lesion, random_world, slice_name, to_preds, write_world
from lesionprop.eval.bootstrap import (MEAN_FPS, bootstrap_ci, draw_weights, percentile_ci,
                                       point_sensitivity, resampled_sensitivity)
from lesionprop.eval.froc import evaluate

RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 8.0)


def resample_and_evaluate(lesions, rows, units, weights, rates):
    """The slow reference: copy each patient as often as it was drawn (fresh patient ids) and re-run evaluate."""
    new_les, new_rows, next_id = [], [], 1
    for unit, count in zip(units, weights):
        for _ in range(int(count)):
            new_les += [make_lesion(slice_name(next_id, g.key_slice), g.box, split=3) for g in lesions
                        if g.patient == unit]
            new_rows += [(next_id, k, box, s) for p, k, box, s in rows if p == unit]
            next_id += 1
    return evaluate(new_les, to_preds(new_rows), fps=rates).sensitivity


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampling_equals_re_evaluating_resampled_patients(seed):
    rng = np.random.default_rng(seed)
    lesions, rows = random_world(rng, 7)
    res = evaluate(lesions, to_preds(rows), fps=RATES)
    out = res.outcomes
    assert out.units.tolist() == list(range(1, 8))
    weights = draw_weights(out.units.size, 12, seed)
    fast = resampled_sensitivity(out, weights, RATES, chunk_elements=5)     # several chunks
    for b in range(weights.shape[0]):
        slow = resample_and_evaluate(lesions, rows, out.units, weights[b], RATES)
        np.testing.assert_allclose(fast[b], slow, rtol=1e-12, atol=1e-15)
    # all-ones weights: the point estimate
    np.testing.assert_allclose(resampled_sensitivity(out, np.ones((1, 7), int), RATES)[0], res.sensitivity,
                               rtol=1e-12)
    assert point_sensitivity(out, RATES).tolist() == res.sensitivity.tolist()


def test_weights_draw_every_unit_count_with_replacement():
    w = draw_weights(5, 1000, 3)
    assert w.shape == (1000, 5) and (w.sum(1) == 5).all()
    np.testing.assert_allclose(w.mean(0), 1.0, atol=0.1)
    assert (draw_weights(5, 10, 3) == draw_weights(5, 10, 3)).all()
    with pytest.raises(ValueError, match="at least one unit"):
        draw_weights(0, 10, 0)


def test_hand_computed_three_patient_bootstrap():
    # patient 1: one image, one lesion, found by a 0.9 detection; patient 2: one image, one
    # lesion, one FP at 0.8, the lesion found at 0.7; patient 3: one image, one lesion, missed, FP at 0.6.
    les = [make_lesion(slice_name(p, 10), (0, 0, 10, 10), split=3) for p in (1, 2, 3)]
    rows = [(1, 10, (0, 0, 10, 10), 0.9), (2, 10, (100, 100, 110, 110), 0.8), (2, 10, (0, 0, 10, 10), 0.7),
            (3, 10, (100, 100, 110, 110), 0.6)]
    res = evaluate(les, to_preds(rows), fps=(0.5, 1.0))
    # pooled curve: (0, 1/3) (1/3, 1/3) (1/3, 2/3) (2/3, 2/3): 0.5 FP -> 2/3, 1 FP -> 2/3
    assert res.sensitivity.tolist() == [2 / 3, 2 / 3]
    # each multiset of patients by hand: sensitivity at 1 FP per image (n1, n2, n3 copies)
    # (3,0,0) 1; (0,3,0) 1 (one FP per image, the lesion after it); (0,0,3) 0;
    # (2,1,0) 1; (2,0,1) 2/3; (1,2,0) 1; (0,2,1): FPs 2/3 after p2's, lesions at the same rate, then 1 -> 2/3;
    # (1,0,2) 1/3; (0,1,2) 1/3; (1,1,1) 2/3
    by_hand = {(3, 0, 0): 1, (0, 3, 0): 1, (0, 0, 3): 0, (2, 1, 0): 1, (2, 0, 1): 2 / 3, (1, 2, 0): 1,
               (0, 2, 1): 2 / 3, (1, 0, 2): 1 / 3, (0, 1, 2): 1 / 3, (1, 1, 1): 2 / 3}
    weights = draw_weights(3, 40, 123)
    expected = np.array([by_hand[tuple(w)] for w in weights.tolist()], dtype=float)
    ci = bootstrap_ci(res.outcomes, (1.0,), level=0.8, n_boot=40, seed=123)
    np.testing.assert_allclose(ci.samples[:, 0], expected, rtol=1e-12)
    lo, hi = np.quantile(expected, [0.1, 0.9])
    assert (ci.ci_low[0], ci.ci_high[0]) == pytest.approx((lo, hi))
    assert ci.mean == pytest.approx(np.mean([2 / 3] * 5))          # 2/3 at every one of 0.5 ... 8


def test_more_patients_give_a_narrower_interval():
    widths = []
    for n in (10, 80):
        lesions, rows = random_world(np.random.default_rng(5), n)
        ci = bootstrap_ci(evaluate(lesions, to_preds(rows)).outcomes, MEAN_FPS, n_boot=300, seed=0)
        widths.append(ci.mean_ci[1] - ci.mean_ci[0])
    assert widths[1] < 0.6 * widths[0]


def test_no_detections_and_bad_arguments():
    lesions, _ = random_world(np.random.default_rng(0), 3)
    out = evaluate(lesions, to_preds([])).outcomes
    assert resampled_sensitivity(out, draw_weights(3, 4, 0), (1.0,)).tolist() == [[0.0]] * 4
    with pytest.raises(ValueError, match="weights must be"):
        resampled_sensitivity(out, np.ones((2, 4), int), (1.0,))
    with pytest.raises(ValueError, match="confidence level"):
        percentile_ci(np.zeros((3, 1)), 95)


def test_evaluate_cli_ci(tmp_path, capsys):
    import json

    from lesionprop.cli import main

    lesions, rows = random_world(np.random.default_rng(4), 12)
    ann, pred = write_world(tmp_path, lesions, rows)
    args = ["evaluate", "--annotations", str(ann), "--predictions", str(pred), "--ci", "0.9", "--bootstrap", "200",
            "--seed", "7"]
    assert main(args + ["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    ci = bootstrap_ci(evaluate(lesions, to_preds(rows)).outcomes, out["fps"], level=0.9, n_boot=200, seed=7)
    assert out["ci_low"] == ci.ci_low.tolist() and out["ci_high"] == ci.ci_high.tolist()
    assert len(out["ci_low"]) == len(out["sensitivity"]) == 5
    assert all(lo <= s <= hi for lo, s, hi in zip(out["ci_low"], out["sensitivity"], out["ci_high"]))
    assert out["mean"] == pytest.approx(np.mean(out["sensitivity"]))
    assert out["mean_ci"][0] <= out["mean"] <= out["mean_ci"][1]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "90% CI low" in text and "mean over 0.5-8 FPs" in text and "over 12 patients" in text
    assert main(args + ["--convention", "3dce"]) == 2
    assert "--ci needs --convention mulan" in capsys.readouterr().err
    assert main(args[:-4] + ["--bootstrap", "0"]) == 2
