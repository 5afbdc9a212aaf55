"""A procedural instruction-task world that a tiny T5 can learn on CPU.

Design constraints (docs/internals.md, "The tiny world"):
- each task is learnable by a LoRA on the tiny backbone (word selection, copying
  and keyword classification, on top of a backbone pretrained on *other* string
  operations, see `pretraining_examples`);
- tasks are separable by SAPT's router, which only sees max-pooled input token
  embeddings: every task's instruction uses its own words.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator

from ..errors import ConfigError
from .task import Example, Task

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


def content_words(n: int = 240) -> list[str]:
    """Deterministic pseudo-words (two consonant-vowel syllables), shared by all tasks."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    rng = random.Random(1234)
    words = sorted({a + b for a in syllables for b in syllables})
    return rng.sample(words, n)


TOPICS: dict[str, list[str]] = {
    "sports": ["football", "tennis", "goal", "match", "coach"],
    "food": ["bread", "cheese", "soup", "apple", "kitchen"],
    "music": ["guitar", "song", "piano", "drums", "concert"],
    "travel": ["airport", "hotel", "beach", "train", "passport"],
}
MOODS: dict[str, list[str]] = {
    "happy": ["wonderful", "great", "lovely", "delight", "excellent"],
    "sad": ["terrible", "awful", "gloomy", "boring", "dreadful"],
}

Generator = Callable[[random.Random, list[str]], tuple[str, str]]


def sample_words(rng: random.Random, vocab: list[str], lo: int, hi: int) -> list[str]:
    """lo to hi distinct words of vocab, in random order."""
    return rng.sample(vocab, rng.randint(lo, hi))


def _reverse(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 3, 5)
    return " ".join(w), " ".join(reversed(w))


def _first_word(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 3, 6)
    return " ".join(w), w[0]


def _last_word(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 3, 6)
    return " ".join(w), w[-1]


def _repeat(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 4)
    return " ".join(w), " ".join(x for word in w for x in (word, word))


def _keyword_class(classes: dict[str, list[str]]) -> Generator:
    def make(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
        label = rng.choice(sorted(classes))
        w = sample_words(rng, vocab, 3, 5)
        w.insert(rng.randint(0, len(w)), rng.choice(classes[label]))
        return " ".join(w), label

    return make


def _count(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 5)
    return " ".join(w), ["two", "three", "four", "five"][len(w) - 2]


# name -> (instruction, generator, metric). Instructions share no content words.
CLASSIFICATION_TASKS = ("topic", "sentiment")
SYNTHETIC_TASKS: dict[str, tuple[str, Generator]] = {
    "reverse": ("Reverse the order of these words.", _reverse),
    "first_word": ("Write down only the first word.", _first_word),
    "topic": ("Classify the topic as sports, food, music or travel.", _keyword_class(TOPICS)),
    "repeat": ("Say every single term twice.", _repeat),
    "sentiment": ("Decide whether this review sounds happy or sad.", _keyword_class(MOODS)),
    "last_word": ("Name the final entry.", _last_word),
    "count": ("Tally the items present, answer in letters.", _count),
}


def task_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**31)


def unique_examples(instruction: str, make: Generator, rng: random.Random, n: int) -> Iterator[Example]:
    """n examples of `make` with distinct inputs, drawn from rng over the shared pseudo-words."""
    vocab = content_words()
    seen: set[str] = set()
    attempts = 0
    while len(seen) < n:
        attempts += 1
        if attempts > 50 * n:
            raise ConfigError(f"synthetic task cannot produce {n} distinct examples; lower benchmark.*_per_task")
        text, answer = make(rng, vocab)
        if text in seen:
            continue
        seen.add(text)
        yield Example(definition=instruction, input=text, outputs=(answer,))


def build_synthetic_task(name: str, seed: int, n_train: int, n_dev: int, n_test: int) -> Task:
    """Disjoint train/dev/test splits, deterministic in (seed, name)."""
    if name not in SYNTHETIC_TASKS:
        raise ConfigError(f"unknown synthetic task '{name}' in benchmark.tasks; valid: {', '.join(SYNTHETIC_TASKS)}")
    instruction, make = SYNTHETIC_TASKS[name]
    rng = random.Random(task_seed(seed, name))
    examples = list(unique_examples(instruction, make, rng, n_train + n_dev + n_test))
    return Task(
        name=name,
        metric="exact_match",
        template="synthetic",
        train=examples[:n_train],
        dev=examples[n_train : n_train + n_dev],
        test=examples[n_train + n_dev :],
        classification=name in CLASSIFICATION_TASKS,
    )


# Pretraining operations: generic string skills, deliberately *not* the stream's tasks,
# so that the base model does not already solve them (FWT and forgetting stay meaningful).
def _copy(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 1, 8)
    return " ".join(w), " ".join(w)


def _second_word(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 7)
    return " ".join(w), w[1]


def _drop_first(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 7)
    return " ".join(w), " ".join(w[1:])


def _rotate(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 6)
    return " ".join(w), " ".join(w[1:] + w[:1])


def _contains(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    w = sample_words(rng, vocab, 2, 6)
    probe = rng.choice(w) if rng.random() < 0.5 else rng.choice(vocab)
    return f"{probe} : " + " ".join(w), "yes" if probe in w else "no"


PRETRAIN_OPS: dict[str, tuple[str, Generator]] = {
    "copy": ("Copy the text.", _copy),
    "second": ("Give the second token.", _second_word),
    "drop": ("Drop the leading token.", _drop_first),
    "rotate": ("Rotate left by one.", _rotate),
    "contains": ("Is the probe present?", _contains),
}


def pretraining_examples(rng: random.Random, n: int) -> list[Example]:
    """Mixed generic string operations for the tiny backbone's pretraining."""
    vocab = content_words()
    label_words = [w for ws in list(TOPICS.values()) + list(MOODS.values()) for w in ws]
    ops = list(PRETRAIN_OPS.values())
    out = []
    for _ in range(n):
        instruction, make = rng.choice(ops)
        # Let label and keyword words appear in pretraining text so the backbone can emit them.
        text, answer = make(rng, vocab + label_words + list(TOPICS) + list(MOODS))
        out.append(Example(definition=instruction, input=text, outputs=(answer,)))
    return out


def tokenizer_corpus() -> list[str]:
    """Every string the tiny tokenizer must encode compactly."""
    rng = random.Random(7)
    lines = [ex.definition + "\n" + ex.input + "\nOutput: " + ex.target for ex in pretraining_examples(rng, 4000)]
    for instruction, make in SYNTHETIC_TASKS.values():
        for _ in range(200):
            text, answer = make(rng, content_words())
            lines.append(instruction + "\n" + text + "\nOutput: " + answer)
    return lines
