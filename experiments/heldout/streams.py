"""Write held-out string streams in the CL_Benchmark layout, to test SAPT's defaults off their demo stream.

The quickstart stream's defaults were chosen on five tasks whose instructions share no words and
whose inputs differ in form. The tasks here are new (none is in `sapt_lightning.data.synthetic`'s
stream or its pretraining operations), and they are read through the real-data loader, so every
prompt carries the SuperNI template's shared words. Two kinds of overlap are built in:

- `form`: three tasks read the same kind of input, a bare list of pseudo-words, and differ only
  in their instruction (`tail`, `pair`, `wrap`);
- `twins`: two tasks read inputs drawn from one generator (a word list with one animal word in it)
  and answer different questions about it (`animal`, `habitat`).

Usage: `python experiments/heldout/streams.py OUT_DIR` writes `OUT_DIR/SuperNI/<task>/{train,dev,test}.json`;
then run a stream with
`sapt benchmark=superni paths.data_dir=OUT_DIR benchmark.exact_match_tasks=all 'benchmark.tasks=[...]'`
(the task lists are in `STREAMS`, and `experiments/heldout/README.md` gives the commands).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from sapt_lightning.data.io import write_task_json
from sapt_lightning.data.synthetic import Generator, sample_words, task_seed, unique_examples
from sapt_lightning.data.task import Example

ANIMALS = {"cat": "land", "horse": "land", "shark": "water", "trout": "water", "eagle": "air", "owl": "air"}
NUMBER_WORDS = ["seven", "nine", "eleven", "twenty"]


def _with_animal(rng: random.Random, vocab: list[str]) -> tuple[list[str], str]:
    words, animal = sample_words(rng, vocab, 2, 4), rng.choice(sorted(ANIMALS))
    words.insert(rng.randint(0, len(words)), animal)
    return words, animal


def _tail(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words = sample_words(rng, vocab, 3, 6)
    return " ".join(words), words[-1]


def _pair(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words = sample_words(rng, vocab, 3, 6)
    return " ".join(words), " ".join(words[:2])


def _wrap(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words = sample_words(rng, vocab, 2, 4)
    return " ".join(words), "begin " + " ".join(words) + " end"


def _animal(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words, animal = _with_animal(rng, vocab)
    return " ".join(words), animal


def _habitat(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words, animal = _with_animal(rng, vocab)
    return " ".join(words), ANIMALS[animal]


def _number(rng: random.Random, vocab: list[str]) -> tuple[str, str]:
    words = sample_words(rng, vocab, 2, 5)
    if rng.random() < 0.5:
        words.insert(rng.randint(0, len(words)), rng.choice(NUMBER_WORDS))
        return " ".join(words), "yes"
    return " ".join(words), "no"


# name -> (instruction, generator). No instruction shares a content word with the quickstart's.
TASKS: dict[str, tuple[str, Generator]] = {
    "tail": ("Give back the closing token of the list.", _tail),
    "pair": ("Write out the opening two tokens of the list.", _pair),
    "wrap": ("Put begin before the list and end after it.", _wrap),
    "animal": ("Which creature appears in the list?", _animal),
    "habitat": ("Where does the creature in the list live: land, water or air?", _habitat),
    "number": ("Is a number word hidden among the tokens? Answer yes or no.", _number),
}

STREAMS: dict[str, list[str]] = {
    "form": ["tail", "number", "pair", "animal", "wrap"],
    "twins": ["animal", "tail", "habitat", "number", "pair"],
}


def examples(name: str, seed: int, n: int) -> list[Example]:
    """`n` examples of task `name` with distinct inputs, deterministic in (seed, name)."""
    instruction, make = TASKS[name]
    return list(unique_examples(instruction, make, random.Random(task_seed(seed, "heldout:" + name)), n))


def write_streams(out: Path, sizes: tuple[int, int, int] = (600, 60, 100), seed: int = 0) -> list[Path]:
    """Every task of every stream under `out/SuperNI/`, with disjoint train/dev/test splits."""
    n_train, n_dev, n_test = sizes
    written = []
    for name in TASKS:
        data = examples(name, seed, n_train + n_dev + n_test)
        splits = {"train": data[:n_train], "dev": data[n_train : n_train + n_dev], "test": data[n_train + n_dev :]}
        for split, rows in splits.items():
            path = out / "SuperNI" / name / f"{split}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_task_json(path, rows)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write OUT/SuperNI/<task>/ into")
    args = parser.parse_args(argv)
    written = write_streams(args.out)
    print(f"wrote {len(written)} files under {args.out / 'SuperNI'}")
    for stream, names in STREAMS.items():
        print(f"  {stream}: benchmark.tasks=[{','.join(names)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
