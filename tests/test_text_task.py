"""Tests for latentebm.tasks.text (vocabulary, tokenizers, TextTask batching)."""

import io
import logging
import os
import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from latentebm.data import DataFileError
from latentebm.tasks.text import (
    SentencePieceTokenizer,
    TextTask,
    Tokenizer,
    Vocabulary,
    WordTokenizer,
    tokenizer_from_state_dict,
)

Config = TextTask.Config


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _random_corpus(n: int, seed: int, max_len: int = 40) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(50)] + ["the", "a", "of", "<unk>"]
    return [" ".join(rng.choices(words, k=rng.randint(1, max_len))) for _ in range(n)]


def _roundtrip(obj: dict) -> dict:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.fixture
def small_task(tmp_path: Path) -> TextTask:
    train = _write(tmp_path / "train.txt", ["b a c a", "", "a b <unk>", "d"])
    valid = _write(tmp_path / "valid.txt", ["a z b", "c"])
    return TextTask(Config(train=train.name, valid=valid.name), str(tmp_path))


# ----------------------------------------------------------------------------- vocabulary


def test_vocabulary_order_and_specials() -> None:
    vocab = Vocabulary.build([["b", "a", "c", "a"], ["a", "b", "<unk>"], ["d"], ["<unk>"]])
    # specials, then frequency descending (a:3, b:2), then alphabetical ties (c, d)
    assert vocab.itos == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b", "c", "d"]
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.itos.count("<unk>") == 1
    assert vocab.encode(["a", "<unk>", "zzz", "d"]) == [4, 1, 1, 7]
    assert vocab.decode([2, 4, 1, 5, 3, 6, 0]) == ["a", "<unk>", "b"]
    assert vocab.decode([2, 4, 3], strip_specials=False) == ["<bos>", "a", "<eos>"]
    assert len(vocab) == 8


def test_vocabulary_min_freq_max_size() -> None:
    sents = [["a", "a", "a", "b", "b", "c"]]
    assert Vocabulary.build(sents, min_freq=2).itos[4:] == ["a", "b"]
    assert len(Vocabulary.build(sents, max_size=5)) == 5
    v = Vocabulary.build(sents)
    assert Vocabulary.from_state_dict(_roundtrip(v.state_dict())).itos == v.itos


# ----------------------------------------------------------------------------- text task


def test_encode_decode_padding(small_task: TextTask) -> None:
    task = small_task
    assert task.generator_kwargs() == {"vocab_size": 8, "pad_id": 0, "bos_id": 2, "eos_id": 3}
    batch = task.encode(["a b", "d c a <unk> q"])
    a, b, c, d = 4, 5, 6, 7
    assert batch.dtype == torch.long
    assert batch.tolist() == [[2, a, b, 3, 0, 0, 0], [2, d, c, a, 1, 1, 3]]
    assert task.decode(batch) == ["a b", "d c a <unk> <unk>"]
    assert task.decode(batch.tolist()) == ["a b", "d c a <unk> <unk>"]
    assert task.num_target_tokens(batch) == 3 + 6
    assert task.num_sentences("train") == 3  # blank line skipped
    assert task.num_sentences("valid") == 2
    assert "train 3" in task.describe() and "vocab 8" in task.describe()


def test_unconfigured_split(small_task: TextTask) -> None:
    with pytest.raises(ValueError, match="test"):
        small_task.num_sentences("test")
    with pytest.raises(ValueError, match="bogus"):
        small_task.batches("bogus", 2, seed=0, epoch=0)


def test_length_filters_and_max_sentences(tmp_path: Path) -> None:
    lines = ["a", "a b", "a b c", "a b c d", "a b c d e"]
    _write(tmp_path / "t.txt", lines)
    cfg = Config(train="t.txt", min_length=2, max_length=4)
    task = TextTask(cfg, str(tmp_path))
    assert task.sentences("train") == ["a b", "a b c", "a b c d"]
    assert "1 short" in task.describe() and "1 long" in task.describe()
    task = TextTask(Config(train="t.txt", max_sentences=2), str(tmp_path))
    assert task.num_sentences("train") == 2


def test_a_split_that_loses_many_sentences_to_the_limits_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = ["a b c d e f"] * 4 + [f"w{i} x" for i in range(96)]
    _write(tmp_path / "t.txt", lines)
    with caplog.at_level(logging.INFO, logger="latentebm.tasks.text"):
        TextTask(Config(train="t.txt", max_length=4), str(tmp_path)).sentences("train")
    assert [r.levelname for r in caplog.records if "dropped" in r.getMessage()] == ["INFO"]
    assert "dropped 4 of 100 examples" in caplog.text  # 4 % of the split ...
    caplog.clear()
    _write(tmp_path / "t.txt", lines[:20])  # 4 of 20
    with caplog.at_level(logging.INFO, logger="latentebm.tasks.text"):
        TextTask(Config(train="t.txt", max_length=4), str(tmp_path)).sentences("train")
    (record,) = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert record.levelname == "WARNING"  # ... is more than 5 %: the setting is named
    assert "dropped 4 of 20 examples (20 %): 4 longer than 4 tokens" in record.getMessage()
    assert "task.max_length" in record.getMessage()


def test_valid_fraction_split(tmp_path: Path) -> None:
    lines = [f"s{i} x" for i in range(100)]
    _write(tmp_path / "t.txt", lines)
    cfg = Config(train="t.txt", valid_fraction=0.1)
    t1 = TextTask(cfg, str(tmp_path))
    t2 = TextTask(cfg, str(tmp_path))
    assert t1.num_sentences("valid") == 10 and t1.num_sentences("train") == 90
    assert t1.sentences("valid") == t2.sentences("valid")  # fixed seed
    assert not set(t1.sentences("valid")) & set(t1.sentences("train"))
    assert t1.sentences("train") == sorted(t1.sentences("train"), key=lambda s: int(s[1:-2]))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        Config(train="x", valid="y", valid_fraction=0.1)
    with pytest.raises(ValueError):
        Config(train="x", tokenizer="chars")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Config(train="x", valid_fraction=1.0)


def test_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    with pytest.raises(DataFileError) as info:
        TextTask(Config(train="ptb/ptb.train.txt.gz"), str(tmp_path))
    assert "ptb/ptb.train.txt.gz" in str(info.value) and "LATENTEBM_DATA" in str(info.value)


# ----------------------------------------------------------------------------- batching


@pytest.fixture(scope="module")
def batch_task(tmp_path_factory: pytest.TempPathFactory) -> TextTask:
    d = tmp_path_factory.mktemp("batch")
    _write(d / "train.txt", _random_corpus(2000, seed=1))
    _write(d / "valid.txt", _random_corpus(103, seed=2))
    return TextTask(Config(train="train.txt", valid="valid.txt"), str(d))


def _row_ids(batches: list[torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(r[r != 0].tolist()) for b in batches for r in b]


def test_batches_deterministic_and_cover(batch_task: TextTask) -> None:
    task = batch_task
    b1 = task.batches("train", 16, seed=3, epoch=0)
    b2 = task.batches("train", 16, seed=3, epoch=0)
    b3 = task.batches("train", 16, seed=3, epoch=1)
    assert len(b1) == len(b2) and all(torch.equal(x, y) for x, y in zip(b1, b2, strict=True))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(b1, b3, strict=False))
    expected = sorted(_row_ids([task.encode(task.sentences("train"))]))
    for bs in (b1, b3):
        assert sorted(_row_ids(bs)) == expected  # every sentence exactly once
        assert sum(b.shape[0] for b in bs) == 2000
        assert all(b.shape[0] <= 16 for b in bs)
        assert all(((b[:, 0] == 2) & ((b == 3).sum(1) == 1)).all() for b in bs)


def test_batches_similar_lengths(batch_task: TextTask) -> None:
    task = batch_task

    def spread(bs: list[torch.Tensor]) -> float:
        lens = [(b != 0).sum(1) for b in bs]
        return sum(float(x.max() - x.min()) for x in lens) / len(lens)

    bucketed = spread(task.batches("train", 16, seed=0, epoch=0))
    unsorted = spread(task.batches("train", 16, seed=0, epoch=0, shuffle=False))
    assert unsorted > 20
    assert bucketed < 0.1 * unsorted


def test_batches_no_shuffle_file_order(batch_task: TextTask) -> None:
    task = batch_task
    bs = task.batches("valid", 10, seed=0, epoch=5, shuffle=False)
    assert [b.shape[0] for b in bs] == [10] * 10 + [3]
    flat = [s for b in bs for s in task.decode(b)]
    expected = task.decode(task.encode(task.sentences("valid")))
    assert flat == expected
    assert all(
        torch.equal(x, y)
        for x, y in zip(bs, task.batches("valid", 10, seed=9, epoch=0, shuffle=False), strict=True)
    )


def test_batches_ranks(batch_task: TextTask) -> None:
    task = batch_task
    full = task.batches("train", 16, seed=4, epoch=2)
    world = 3
    shares = [
        task.batches("train", 16, seed=4, epoch=2, rank=r, world_size=world) for r in range(3)
    ]
    assert len({len(s) for s in shares}) == 1
    assert len(shares[0]) == len(full) // world
    # the shares are disjoint parts of one epoch (tasks/batching.py groups the ranks' batches
    # by length), missing at most world - 1 batches of it: no sentence more often than the
    # split holds it
    used = Counter(_row_ids([b for s in shares for b in s]))
    everything = Counter(_row_ids(full))
    assert not used - everything
    assert everything.total() - (world - 1) * 16 <= used.total() <= everything.total()
    with pytest.raises(ValueError):
        task.batches("train", 16, seed=4, epoch=2, rank=3, world_size=3)


# ----------------------------------------------------------------------------- state dicts


def test_word_state_roundtrip(batch_task: TextTask) -> None:
    task = batch_task
    state = _roundtrip(task.state_dict())
    restored = TextTask(Config(train="does/not/exist.txt"), None, state=state)
    sents = task.sentences("valid")[:20] + ["w1 unseen w2"]
    assert torch.equal(task.encode(sents), restored.encode(sents))
    assert restored.generator_kwargs() == task.generator_kwargs()
    with pytest.raises(ValueError, match="tokenizer"):
        TextTask(Config(train="x", tokenizer="sentencepiece"), None, state=state)


@pytest.fixture(scope="module")
def spm_task(tmp_path_factory: pytest.TempPathFactory) -> TextTask:
    d = tmp_path_factory.mktemp("spm")
    rng = random.Random(0)
    words = [
        "the",
        "cat",
        "dog",
        "sat",
        "on",
        "mat",
        "big",
        "small",
        "red",
        "house",
        "tree",
        "runs",
        "jumps",
        "over",
        "under",
    ]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) for _ in range(300)]
    lines[5] = "the <unk> sat on the mat"
    _write(d / "train.txt", lines)
    cfg = Config(train="train.txt", tokenizer="sentencepiece", spm_vocab_size=60)
    return TextTask(cfg, str(d))


def test_sentencepiece_task(spm_task: TextTask) -> None:
    task = spm_task
    tok = task.tokenizer
    assert isinstance(tok, SentencePieceTokenizer) and isinstance(tok, Tokenizer)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert 4 < len(tok) <= 60
    sents = ["the cat sat on the mat", "big red house", "the <unk> runs"]
    batch = task.encode(sents)
    assert (batch[:, 0] == 2).all()
    assert task.decode(batch) == sents
    assert 1 in batch[2].tolist()  # literal <unk> -> unk id
    assert task.num_sentences("train") == 300


def test_sentencepiece_state_roundtrip(spm_task: TextTask) -> None:
    state = _roundtrip(spm_task.state_dict())
    assert isinstance(state["tokenizer"]["model"], torch.Tensor)
    restored = TextTask(Config(train="nowhere", tokenizer="sentencepiece"), None, state=state)
    sents = ["the dog jumps over the big tree", "small mat <unk>", "zebra"]
    assert torch.equal(spm_task.encode(sents), restored.encode(sents))
    tok = tokenizer_from_state_dict(state["tokenizer"])
    assert tok.encode(sents[0]) == spm_task.tokenizer.encode(sents[0])


def test_word_tokenizer_lowercase() -> None:
    tok = WordTokenizer(Vocabulary.build([["the", "cat"]]), lowercase=True)
    assert isinstance(tok, Tokenizer)
    assert tok.encode("The CAT") == [5, 4]  # cat=4, the=5 (tie -> alphabetical)
    restored = tokenizer_from_state_dict(_roundtrip(tok.state_dict()))
    assert restored.encode("The CAT") == tok.encode("the cat")


# ----------------------------------------------------------------------------- real data


def test_builtin_wordnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    cfg = Config(train="builtin:wordnet30_examples.txt.gz", valid_fraction=0.05, lowercase=True)
    task = TextTask(cfg, None)
    n_train, n_valid = task.num_sentences("train"), task.num_sentences("valid")
    assert n_train + n_valid == 48224
    assert n_valid == round(48224 * 0.05)
    assert len(task.batches("train", 64, seed=0, epoch=0)) > 0


def _ptb_root() -> Path:
    root = os.environ.get("LATENTEBM_DATA")
    if not root:
        pytest.skip("LATENTEBM_DATA is not set; real PTB test needs the data root")
    ptb = Path(root) / "ptb"
    if not all((ptb / f"ptb.{s}.txt.gz").is_file() for s in ("train", "valid", "test")):
        pytest.skip(f"PTB files not found under {ptb}")
    return Path(root)


@pytest.mark.real_data
def test_real_ptb() -> None:
    root = _ptb_root()
    cfg = Config(
        train="ptb/ptb.train.txt.gz", valid="ptb/ptb.valid.txt.gz", test="ptb/ptb.test.txt.gz"
    )
    task = TextTask(cfg, str(root))
    assert [task.num_sentences(s) for s in ("train", "valid", "test")] == [42068, 3370, 3761]
    # 9,999 word types incl. <unk> in train: 9,998 words + 4 specials
    assert len(task.tokenizer) == 10002
    itos = task.tokenizer.vocab.itos
    assert itos[:5] == ["<pad>", "<unk>", "<bos>", "<eos>", "the"]
    sri = root / "ptb" / "ptb.sri_text.dict"
    if sri.is_file():
        ref = [line.split()[0] for line in sri.read_text().splitlines()]
        assert set(ref[4:]) == set(itos[4:])
    # valid/test have no OOV w.r.t. train except PTB's own <unk> tokens
    valid = task.encode(task.sentences("valid"))
    n_unk = int((valid == 1).sum())
    n_unk_text = sum(s.split().count("<unk>") for s in task.sentences("valid"))
    assert n_unk == n_unk_text
    train_batches = task.batches("train", 32, seed=0, epoch=0)
    assert sum(b.shape[0] for b in train_batches) == 42068
    assert sum(task.num_target_tokens(b) for b in train_batches) == 887521 + 42068


# ----------------------------------------------------------------------------- folders, recipes


def _folder(tmp_path: Path) -> Path:
    import gzip

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "b_second.txt.gz").write_bytes(gzip.compress(b"third line\n\n fourth line \n"))
    _write(folder / "a_first.txt", ["first line", "", "second line"])
    _write(folder / "c_notes.md", ["not text data"])  # neither .txt nor .txt.gz: ignored
    (folder / "d_sub.txt").mkdir()  # a directory, not a file: ignored
    return folder


def test_folder_reads_txt_and_gz_in_name_order(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    expected = ["first line", "second line", "third line", "fourth line"]
    task = TextTask(Config(train=str(folder)), None)  # absolute folder
    assert task.sentences("train") == expected
    # relative to the data root, and for valid/test too
    task = TextTask(Config(train="corpus", valid="corpus", test="corpus"), str(tmp_path))
    assert [task.sentences(s) for s in ("train", "valid", "test")] == [expected] * 3


def test_empty_folder_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENTEBM_DATA", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    _write(empty / "readme.md", ["no"])
    with pytest.raises(DataFileError) as info:
        TextTask(Config(train=str(empty)), None)
    message = str(info.value)
    assert str(empty) in message and "*.txt" in message and "\n" not in message
    with pytest.raises(DataFileError, match="no data root"):  # a relative name needs a root
        TextTask(Config(train="empty"), None)


def test_new_recipes_load_and_cat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from latentebm.cli import builtin_recipes, main
    from latentebm.config import load_recipe

    recipes = builtin_recipes()
    sizes = {"snli": (256, 256), "yahoo": (512, 1024), "text_folder": (64, 128)}
    for name, (emb, hidden) in sizes.items():
        overrides = [f"task.train={tmp_path}"] if name == "text_folder" else []
        recipe = load_recipe(recipes[name], overrides)
        assert recipe.name == name
        gen = recipe.model.generator.args
        assert (gen.embedding_dim, gen.hidden_dim) == (emb, hidden)
        assert (recipe.model.prior_chain.n_steps, recipe.model.prior_chain.step_size) == (60, 0.4)
        assert recipe.model.posterior_chain.n_steps == 20
        assert main(["cat", name, *overrides]) == 0
        assert f"name: {name}" in capsys.readouterr().out
    assert load_recipe(recipes["snli"]).task.args.train == "snli/snli.train.txt.gz"
    assert load_recipe(recipes["yahoo"]).task.args.max_vocab == 20000
    assert load_recipe(recipes["snli"]).model.z_dim == 32


def test_text_folder_recipe_task(tmp_path: Path) -> None:
    from latentebm.cli import builtin_recipes
    from latentebm.config import load_recipe

    folder = tmp_path / "many"
    folder.mkdir()
    lines = [f"sentence number {i} has words" for i in range(60)]
    _write(folder / "part1.txt", lines[:30])
    _write(folder / "part2.txt", lines[30:])
    recipe = load_recipe(
        builtin_recipes()["text_folder"], [f"task.train={folder}", "task.spm_vocab_size=40"]
    )
    task = TextTask(recipe.task.args, recipe.data.root)
    assert task.splits == ["train", "valid"]
    assert task.num_sentences("valid") == 3  # 5% of 60
    assert sorted(task.sentences("train") + task.sentences("valid")) == sorted(lines)


def test_sentencepiece_models_are_cached_by_their_input(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from latentebm.tasks.text import cached_sentencepiece

    sentences = [f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog"] * 50)]
    options = {"vocab_size": 40, "model_type": "unigram", "lowercase": False}
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="latentebm"):
        first = cached_sentencepiece(sentences, cache_dir=cache, **options)
        files = list((tmp_path / "cache").glob("spm-*.model"))
        assert len(files) == 1 and "trained" in caplog.text
        caplog.clear()
        again = cached_sentencepiece(sentences, cache_dir=cache, **options)
        assert "(cached)" in caplog.text and again.model_proto == first.model_proto
        # any change of the text or the settings is another model
        cached_sentencepiece(sentences[:-1], cache_dir=cache, **options)
        cached_sentencepiece(sentences, cache_dir=cache, **{**options, "vocab_size": 41})
        assert len(list((tmp_path / "cache").glob("spm-*.model"))) == 3
        # a damaged cache file is retrained and replaced
        files[0].write_bytes(b"not a sentencepiece model")
        caplog.clear()
        repaired = cached_sentencepiece(sentences, cache_dir=cache, **options)
        assert "unreadable tokenizer cache" in caplog.text
        assert repaired.encode("the cat sat") == first.encode("the cat sat")
        assert files[0].read_bytes() == repaired.model_proto


# ----------------------------------------------------------------------------- books

BOOK = """\
The Project Gutenberg eBook of A Tiny Test Book

This eBook is for the use of anyone anywhere in the United States and
most other parts of the world at no cost and with almost no restrictions
whatsoever.

Title: A Tiny Test Book

*** START OF THE PROJECT GUTENBERG EBOOK A TINY TEST BOOK ***




CHAPTER I.

It was a bright cold day in April, and Mr.
Smith walked down St. James Street with Dr. Watson. They did not
speak. The clocks were striking thirteen!

"Good morning, Mrs. Hudson," said he. "Is the kettle on?" asked the
doctor.   She did not answer. Was she asleep? Nobody knew.

'Yes,' said Alice. 'I think so.' Then she
left the room... and the house went quiet.
J. R. Hartley came in.

*** END OF THE PROJECT GUTENBERG EBOOK A TINY TEST BOOK ***

Updated editions will replace the previous one--the old editions will
be renamed.
"""

# hand-checked: the sentences of the text between the markers
BOOK_SENTENCES = [
    "CHAPTER I.",
    "It was a bright cold day in April, and Mr. Smith walked down St. James Street with "
    "Dr. Watson.",
    "They did not speak.",
    "The clocks were striking thirteen!",
    '"Good morning, Mrs. Hudson," said he.',
    '"Is the kettle on?" asked the doctor.',
    "She did not answer.",
    "Was she asleep?",
    "Nobody knew.",
    "'Yes,' said Alice.",
    "'I think so.'",
    "Then she left the room... and the house went quiet.",
    "J. R. Hartley came in.",
]


def _book_task(tmp_path: Path, text: str = BOOK, name: str = "book.txt", **kw) -> TextTask:
    (tmp_path / name).write_text(text, encoding="utf-8")
    return TextTask(Config(train=name, **kw), str(tmp_path))


def test_book_paragraphs_are_split_into_sentences(tmp_path: Path) -> None:
    task = _book_task(tmp_path, sentence_split="paragraph", strip_gutenberg_header=True)
    assert task.sentences("train") == BOOK_SENTENCES
    # without the header option the header and footer are text too, split the same way
    task = _book_task(tmp_path, sentence_split="paragraph")
    sentences = task.sentences("train")
    assert sentences[0] == "The Project Gutenberg eBook of A Tiny Test Book"
    assert sentences[-1] == (
        "Updated editions will replace the previous one--the old editions will be renamed."
    )
    start = sentences.index("*** START OF THE PROJECT GUTENBERG EBOOK A TINY TEST BOOK ***")
    assert sentences[start + 1 : start + 1 + len(BOOK_SENTENCES)] == BOOK_SENTENCES


def test_lines_stay_sentences_by_default(tmp_path: Path) -> None:
    lines = [line.strip() for line in BOOK.splitlines() if line.strip()]
    assert _book_task(tmp_path).sentences("train") == lines  # today's behaviour
    stripped = _book_task(tmp_path, strip_gutenberg_header=True).sentences("train")
    assert stripped == lines[lines.index("CHAPTER I.") : lines.index("J. R. Hartley came in.") + 1]
    assert stripped[1] == "It was a bright cold day in April, and Mr."  # a line fragment


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? four. Five", ["One.", "Two!", "Three? four.", "Five"]),
        ('He said "Go." Then left.', ['He said "Go."', "Then left."]),
        ("Ask Mr. Hale and MRS. Hale. Or Prof. X.", ["Ask Mr. Hale and MRS. Hale.", "Or Prof. X."]),
        ("A sign (see below.) Here it is.", ["A sign (see below.)", "Here it is."]),
        ("\u201cHi.\u201d \u2018Oh.\u2019 Ok.", ["\u201cHi.\u201d", "\u2018Oh.\u2019", "Ok."]),
        ("Wait...  what?  No.", ["Wait... what?", "No."]),
        ("J. Doe, e.g. Fine. (And that.)", ["J. Doe, e.g.", "Fine. (And that.)"]),  # not listed
        ("  ", []),
    ],
)
def test_split_sentences_rule(text: str, expected: list[str]) -> None:
    from latentebm.tasks.text import split_sentences

    assert split_sentences(text) == expected


def test_paragraphs_join_wrapped_lines() -> None:
    from latentebm.tasks.text import paragraphs

    lines = ["", "  first line", "second\tline  ", " \t", "", "next", "   ", "last", ""]
    assert paragraphs(lines) == ["first line second\tline", "next", "last"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (
            "*** START OF THIS PROJECT GUTENBERG EBOOK ALICE ***",
            "*** END OF THIS PROJECT GUTENBERG EBOOK ALICE ***",
        ),
        (
            "\ufeff***START OF THE PROJECT GUTENBERG E-BOOK X***",
            "*** End of the Project Gutenberg eBook X ***",
        ),
    ],
)
def test_gutenberg_marker_variants(start: str, end: str) -> None:
    from latentebm.tasks.text import strip_gutenberg

    lines = ["header", start, "body one", "", "body two", end, "footer"]
    assert strip_gutenberg(lines, "b.txt") == ["body one", "", "body two"]


def test_missing_gutenberg_markers_are_one_line(tmp_path: Path) -> None:
    from latentebm.data import DataFormatError

    no_start = BOOK.replace("*** START OF THE", "START OF THE")
    with pytest.raises(DataFormatError) as info:
        _book_task(tmp_path, no_start, strip_gutenberg_header=True)
    assert str(info.value) == (
        f"{tmp_path / 'book.txt'}: task.strip_gutenberg_header: no '*** START OF THE PROJECT "
        "GUTENBERG EBOOK ... ***' line (or 'START OF THIS PROJECT ...'); not a Project "
        "Gutenberg e-book? set task.strip_gutenberg_header=false"
    )
    no_end = BOOK.split("*** END OF")[0]
    with pytest.raises(DataFormatError) as info:
        _book_task(tmp_path, no_end, "cut.txt", strip_gutenberg_header=True)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cut.txt'}: task.strip_gutenberg_header: no '*** END")
    assert "after the start marker of line 9;" in message and "\n" not in message


def test_book_options_in_a_recipe(tmp_path: Path) -> None:
    from latentebm.cli import builtin_recipes
    from latentebm.config import RecipeError, load_recipe

    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text(BOOK, encoding="utf-8")
    (folder / "b.txt.gz").write_bytes(__import__("gzip").compress(BOOK.encode("utf-8")))
    items = [
        f"task.train={folder}",
        "task.sentence_split=paragraph",
        "task.strip_gutenberg_header=true",
        "task.spm_vocab_size=60",
        "task.max_length=null",  # the recipe's 40 pieces would drop the long sentence
    ]
    recipe = load_recipe(builtin_recipes()["text_folder"], items)
    task = TextTask(recipe.task.args, recipe.data.root)
    # 26 sentences: each file stripped and split on its own; round(26 * 0.05) = 1 held out
    assert task.num_sentences("valid") == 1
    every = sorted(task.sentences("train") + task.sentences("valid"))
    assert every == sorted(BOOK_SENTENCES * 2)
    with pytest.raises(RecipeError, match=r"task.sentence_split=words: expected one of"):
        load_recipe(builtin_recipes()["text_folder"], [*items[:1], "task.sentence_split=words"])
    with pytest.raises(ValueError, match="task.sentence_split must be 'line' or 'paragraph'"):
        Config(train="x", sentence_split="sentences")  # type: ignore[arg-type]
