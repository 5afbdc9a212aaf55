from sapt_lightning.data.synthetic import SYNTHETIC_TASKS, build_synthetic_task, content_words
from sapt_lightning.data.task import render_prompt


def test_deterministic_and_disjoint():
    a = build_synthetic_task("reverse", seed=3, n_train=200, n_dev=20, n_test=50)
    b = build_synthetic_task("reverse", seed=3, n_train=200, n_dev=20, n_test=50)
    assert a.train == b.train and a.test == b.test
    inputs = [set(e.input for e in split) for split in (a.train, a.dev, a.test)]
    assert not (inputs[0] & inputs[1]) and not (inputs[0] & inputs[2]) and not (inputs[1] & inputs[2])
    c = build_synthetic_task("reverse", seed=4, n_train=200, n_dev=20, n_test=50)
    assert c.train != a.train


def test_tasks_answer_correctly():
    rev = build_synthetic_task("reverse", 0, 5, 1, 1).train[0]
    assert rev.target.split() == rev.input.split()[::-1]
    first = build_synthetic_task("first_word", 0, 5, 1, 1).train[0]
    assert first.target == first.input.split()[0]


def test_instructions_share_no_content_words():
    """The router only sees pooled token embeddings: instructions must differ in their words."""
    stop = {"the", "or", "as", "these", "of", "this", "in"}
    words = {n: set(i.lower().strip(".").replace(",", "").split()) - stop for n, (i, _) in SYNTHETIC_TASKS.items()}
    names = list(words)
    for x in range(len(names)):
        for y in range(x + 1, len(names)):
            assert not (words[names[x]] & words[names[y]]), (names[x], names[y])
    assert len(content_words()) == len(set(content_words()))


def test_prompt_template():
    ex = build_synthetic_task("topic", 0, 1, 1, 1).train[0]
    assert render_prompt(ex, "synthetic") == ex.definition + "\n" + ex.input + "\nOutput: "
