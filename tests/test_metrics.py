import pytest
from omegaconf import open_dict

from sapt_lightning.metrics.matrix import (
    average_performance,
    backward_transfer,
    forgetting_rate,
    format_matrix,
    forward_transfer,
    release_variants,
    summary,
)
from sapt_lightning.metrics.scoring import exact_match, normalize_answer, rouge_l, score_task

PERFECT = [[90, None, None], [90, 80, None], [90, 80, 70]]
FORGETS = [[90, None, None], [60, 80, None], [30, 40, 70]]


def test_no_forgetting_gives_zero_bwt_and_fra():
    assert average_performance(PERFECT) == pytest.approx(80)
    assert forgetting_rate(PERFECT) == 0
    assert backward_transfer(PERFECT) == 0


def test_known_degradation():
    # F.Ra: task0 max(90,60)-30=60, task1 80-40=40 -> 50 ; BWT: (30-90 + 40-80)/2 = -50
    assert forgetting_rate(FORGETS) == pytest.approx(50)
    assert backward_transfer(FORGETS) == pytest.approx(-50)
    assert average_performance(FORGETS) == pytest.approx(140 / 3)


def test_fra_uses_the_best_earlier_score():
    m = [[50, None, None], [80, 70, None], [40, 70, 60]]  # task0 improved after task1, then dropped
    assert forgetting_rate(m) == pytest.approx((80 - 40 + 0) / 2)


def test_fwt_against_single_scores_and_release_variants():
    assert forward_transfer(PERFECT, [85, 80, 75]) == pytest.approx((5 + 0 - 5) / 3)
    assert forward_transfer(PERFECT, None) is None
    rel = release_variants(FORGETS)
    assert rel["bwt_over_T"] == pytest.approx(-100 / 3)  # (T-1)/T of the paper's BWT
    assert rel["fwt_vs_50.94"] == pytest.approx(80 - 50.94)


def test_metrics_do_not_mutate_input_and_reject_bad_shapes():
    m = [row[:] for row in FORGETS]
    summary(m, [1, 2, 3])
    assert m == FORGETS
    with pytest.raises(ValueError):
        average_performance([[1, 2], [3]])
    with pytest.raises(ValueError):
        forward_transfer(PERFECT, [1, 2])


def test_exact_match_normalisation():
    assert normalize_answer("  The Cat, sat! ") == "the cat sat"
    assert exact_match("Positive.", "positive") == 100
    assert exact_match("negative", "positive") == 0


def test_rouge_and_multi_reference():
    assert rouge_l("the cat sat", "the cat sat") == pytest.approx(100)
    assert 0 < rouge_l("the cat", "the cat sat on the mat") < 100
    refs = [("wrong answer", "exact words")]
    assert score_task(["exact words"], refs, "rougeL", "best") == pytest.approx(100)
    with pytest.raises(ValueError):
        score_task(["a"], [], "exact_match")


def test_every_method_of_a_stream_finds_the_same_single_task_reference():
    """FWT's reference is the stream's single-task LoRA runs, whatever PET or optimizer the method uses
    (Table 1's prompt rows had no FWT: their key carried pet=prompt, which method=single never has)."""
    from conftest import compose_cfg

    from sapt_lightning.utils.reference import stream_key

    single = stream_key(compose_cfg(["experiment=superni_order1", "method=single"]))
    assert (
        stream_key(
            compose_cfg(["experiment=superni_order1", "method=sapt", "pet=prompt", "trainer.optimizer=adafactor"])
        )
        == single
    )
    assert stream_key(compose_cfg(["experiment=superni_order1", "method=l2p", "pet=prompt"])) == single
    assert stream_key(compose_cfg(["experiment=superni_order2", "method=single"])) != single
    assert stream_key(compose_cfg(["experiment=superni_order1", "method=single", "seed=2"])) != single
    # A data key added later at null (off) keeps the caches written before it; on, it is another stream.
    before = compose_cfg(["experiment=superni_order1", "method=single"])
    with open_dict(before):
        del before.data.group_by_length
    assert stream_key(before) == single
    grouped = compose_cfg(["experiment=superni_order1", "method=single", "data.group_by_length=true"])
    assert stream_key(grouped) != single


def test_printed_matrix_stays_narrow_and_names_every_task():
    """At 15 long task names the matrix keeps to ~110 columns and lists each full name once."""
    names = [f"task{k:03d}_some_long_superni_task_name" for k in range(15)]
    matrix = [[float(j) if j <= i else None for j in range(15)] for i in range(15)]
    text = format_matrix(names, matrix)
    assert max(map(len, text.splitlines())) <= 110
    assert all(sum(line.endswith(name) for line in text.splitlines()) == 1 for name in names)
    short = format_matrix(["agnews", "sst2"], [[71.5, None], [0.0, 45.0]]).splitlines()
    assert short == ["             T1    T2", "T1 agnews  71.5", "T2 sst2     0.0  45.0"]
