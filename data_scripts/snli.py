#!/usr/bin/env python3
"""Extract the SNLI 1.0 sentences as a language-modelling corpus for latentebm.

Usage::

    python data_scripts/snli.py --out DIR                # download snli_1.0.zip
    python data_scripts/snli.py --out DIR --source SRC   # local copy: snli_1.0.zip, or a
                                                         # directory holding
                                                         # snli_1.0_{train,dev,test}.jsonl
                                                         # (or the .txt TSV files)

Preprocessing (the ARAE convention, Zhao et al. 2018, whose SNLI data the text-VAE line of work
and Table 2 of Pang et al. 2020 use; see docs/datasets.md):

* every pair of ``snli_1.0_{split}.jsonl`` is read, *including* pairs whose ``gold_label`` is
  ``-`` (no annotator consensus): the label plays no part in language modelling. Pass
  ``--drop-unlabeled`` for the NLI-classification convention that drops them;
* sentences are the tokens of ``sentence1_binary_parse`` / ``sentence2_binary_parse`` without
  the ``(`` ``)`` brackets (the Stanford PTB tokenization shipped with the release); a record
  without parse fields falls back to a regular-expression tokenization of ``sentence1`` /
  ``sentence2`` (:func:`simple_tokenize`);
* lower-cased; whitespace collapsed; empty sentences skipped;
* a premise equal to the previous pair's premise is skipped (each premise has about three
  hypotheses); hypotheses are all kept; per split all premises come first, then all hypotheses;
* splits: train -> ``snli.train``, dev -> ``snli.valid``, test -> ``snli.test`` (ARAE merged dev
  into train; latentebm needs a validation split).

The number of pairs per split is checked (550,152 / 10,000 / 10,000; ``--skip-count-check`` for
other versions) and the result is written as ``DIR/snli.{train,valid,test}.txt.gz`` (gzip, mtime
0, one sentence per line). Recipes expect ``snli/snli.train.txt.gz`` etc. under the data root
(``$LATENTEBM_DATA``), so use ``--out $LATENTEBM_DATA/snli``. Existing files with different
content are never overwritten.

Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

if (_here := str(Path(__file__).resolve().parent)) not in sys.path:
    sys.path.insert(0, _here)  # loaded by file path rather than run as a script
import _common  # noqa: E402
from _common import DataScriptError  # noqa: E402

URL = "https://nlp.stanford.edu/projects/snli/snli_1.0.zip"
SPLITS = ("train", "valid", "test")
SOURCE_SPLIT = {"train": "train", "valid": "dev", "test": "test"}
"""Our split name -> the split name in the SNLI release."""
EXPECTED_PAIRS = {"train": 550152, "valid": 10000, "test": 10000}
"""Sentence pairs per split in SNLI 1.0 (all rows, including ``gold_label`` ``-``)."""

FIELDS = (
    "gold_label",
    "sentence1",
    "sentence2",
    "sentence1_binary_parse",
    "sentence2_binary_parse",
)
"""The fields kept from each record (the release has more; keeping few saves memory)."""

_TOKEN_RE = re.compile(r"\w+(?:['\-.]\w+)*|[^\w\s]")


Record = dict[str, str]


def source_name(split: str, ext: str = "jsonl") -> str:
    """File name of a split in the release, e.g. ``snli_1.0_dev.jsonl`` for ``valid``."""
    return f"snli_1.0_{SOURCE_SPLIT[split]}.{ext}"


def simple_tokenize(text: str) -> list[str]:
    """Fallback tokenizer: words (with inner ``'``, ``-``, ``.``) and single punctuation marks.

    ``"A man's hat, isn't it?"`` -> ``["A", "man's", "hat", ",", "isn't", "it", "?"]``.
    """
    return _TOKEN_RE.findall(text)


def parse_tokens(binary_parse: str) -> list[str]:
    """Tokens of an SNLI binary parse, e.g. ``( ( A dog ) runs )`` -> ``["A", "dog", "runs"]``."""
    return [t for t in binary_parse.split() if t not in ("(", ")")]


def sentence(record: Record, which: str) -> str:
    """The normalized sentence ``which`` (``"sentence1"`` or ``"sentence2"``) of a record."""
    parse = record.get(f"{which}_binary_parse")
    if parse is not None and parse.strip():
        tokens = parse_tokens(parse)
    else:
        tokens = simple_tokenize(record.get(which, "") or "")
    return " ".join(tokens).lower()


def extract(records: Iterable[Record], drop_unlabeled: bool = False) -> list[str]:
    """Premises (consecutive repeats removed) followed by hypotheses, normalized."""
    premises: list[str] = []
    hypotheses: list[str] = []
    last_premise: str | None = None
    for rec in records:
        if drop_unlabeled and rec.get("gold_label", "") == "-":
            continue
        premise, hypothesis = sentence(rec, "sentence1"), sentence(rec, "sentence2")
        if premise and premise != last_premise:
            premises.append(premise)
        last_premise = premise
        if hypothesis:
            hypotheses.append(hypothesis)
    return premises + hypotheses


def parse_jsonl(text: str, where: str) -> list[Record]:
    """Records of a ``.jsonl`` file (one JSON object per line)."""
    out: list[Record] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataScriptError(f"{where} line {i}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or "sentence1" not in obj or "sentence2" not in obj:
            raise DataScriptError(f"{where} line {i}: no sentence1/sentence2 fields")
        out.append({k: "" if obj.get(k) is None else str(obj[k]) for k in FIELDS if k in obj})
    return out


def parse_tsv(text: str, where: str) -> list[Record]:
    """Records of a release ``.txt`` file (tab separated, header row with field names)."""
    lines = text.splitlines()
    if not lines:
        raise DataScriptError(f"{where} is empty")
    header = lines[0].split("\t")
    if "sentence1" not in header or "sentence2" not in header:
        raise DataScriptError(f"{where}: header lacks sentence1/sentence2 columns")
    out: list[Record] = []
    for line in lines[1:]:
        if line.strip():
            row = dict(zip(header, line.split("\t"), strict=False))
            out.append({k: row[k] for k in FIELDS if k in row})
    return out


def _parse(name: str, data: bytes, where: str) -> list[Record]:
    text = _common.decode_utf8(data, where)
    return parse_jsonl(text, where) if name.endswith(".jsonl") else parse_tsv(text, where)


def read_source_dir(source: Path) -> dict[str, list[Record]]:
    """Read every split from ``snli_1.0_*.jsonl`` (preferred) or ``.txt`` in ``source``.

    Also looks in ``source/snli_1.0`` (an extracted zip).
    """
    out: dict[str, list[Record]] = {}
    for split in SPLITS:
        for d in (source, source / "snli_1.0"):
            found = [d / source_name(split, ext) for ext in ("jsonl", "txt")]
            found = [p for p in found if p.is_file()]
            if found:
                out[split] = _parse(found[0].name, found[0].read_bytes(), str(found[0]))
                break
        else:
            name = source_name(split)
            raise DataScriptError(
                f"{name} (or .txt) not found in {source} or {source / 'snli_1.0'}"
            )
    return out


def read_zip(zip_path: Path) -> dict[str, list[Record]]:
    """Read every split from the official ``snli_1.0.zip`` (``.jsonl`` preferred to ``.txt``)."""
    out: dict[str, list[Record]] = {}
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = {
                Path(n).name: n
                for n in sorted(zf.namelist(), reverse=True)
                if not n.startswith("__MACOSX/") and not n.endswith("/")
            }
            for split in SPLITS:
                for ext in ("jsonl", "txt"):
                    member = members.get(source_name(split, ext))
                    if member is not None:
                        where = f"{zip_path}:{member}"
                        out[split] = _parse(member, zf.read(member), where)
                        break
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataScriptError(f"cannot read zip {zip_path}: {exc}") from exc
    missing = [source_name(s) for s in SPLITS if s not in out]
    if missing:
        raise DataScriptError(f"{zip_path} lacks {', '.join(missing)}")
    return out


def fetch(
    out: Path,
    source: Path | None = None,
    url: str = URL,
    drop_unlabeled: bool = False,
    skip_count_check: bool = False,
) -> list[Path]:
    """Read (or download), check, preprocess and write the three splits; return the paths."""
    records = _common.read_source(source, read_zip, read_source_dir, url, "snli_1.0.zip")
    if not skip_count_check:
        counts = {s: len(records[s]) for s in SPLITS}
        _common.check_counts(counts, EXPECTED_PAIRS, source_name, "pairs")
    data: dict[str, bytes] = {}
    for split in SPLITS:
        sentences = extract(records[split], drop_unlabeled=drop_unlabeled)
        if not sentences:
            raise DataScriptError(f"no sentences in {source_name(split)}")
        data[split] = _common.text_lines(sentences)
        print(
            f"{split}: {len(records[split])} pairs -> {len(sentences)} sentences", file=sys.stderr
        )
    return _common.write_gz_files(out, {f"snli.{s}.txt.gz": data[s] for s in SPLITS})


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = _common.make_parser(
        "Extract SNLI 1.0 sentences as snli.{train,valid,test}.txt.gz "
        "(ARAE convention; see docs/datasets.md).",
        "local snli_1.0.zip, or a directory with snli_1.0_{train,dev,test}.jsonl (or .txt); "
        "default: download " + URL,
    )
    parser.add_argument(
        "--drop-unlabeled",
        action="store_true",
        help="drop pairs with gold_label '-' (NLI convention; default keeps them, as ARAE)",
    )
    _common.add_skip_count_check(parser, f"accept pair counts other than {EXPECTED_PAIRS}")
    args = parser.parse_args(argv)
    return _common.run(
        lambda: fetch(
            args.out,
            args.source,
            drop_unlabeled=args.drop_unlabeled,
            skip_count_check=args.skip_count_check,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
