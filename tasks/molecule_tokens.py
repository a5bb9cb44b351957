"""Molecule tokens (:class:`~latentebm.tasks.molecules.MoleculeTask`): atom-level SMILES tokens
(:data:`SMILES_REGEX`) or SELFIES symbols, RDKit canonical SMILES, the token vocabulary
(:class:`MoleculeTokenizer`) and molecule grids (:func:`draw_grid`).

RDKit and selfies are optional dependencies (``pip install 'latentebm[mol]'``), imported on
first use (:func:`rdkit_chem`, :func:`selfies_module`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from latentebm.errors import MissingDependencyError
from latentebm.tasks.sequence import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    UNK,
    UNK_ID,
    check_specials,
    frequency_order,
    vocabulary_index,
)

__all__ = [
    "SMILES_REGEX",
    "MoleculeTokenizer",
    "canonical_smiles",
    "draw_grid",
    "rdkit_chem",
    "selfies_module",
    "smiles_tokens",
    "tokenize_smiles",
]

SMILES_REGEX = (
    r"(\[[^\]]+\]|Br|Cl|%\d{2}|Si|Se|se|Na|Li|Mg|Al|Ca|Zn|As|B|C|N|O|S|P|F|I|K|H"
    r"|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$|\d|.)"
)
"""Atom-level SMILES tokens (Schwaller et al. 2019 style). Every character is covered (the final
``.`` alternative), so ``"".join(tokenize_smiles(s)) == s`` for any string."""

_SMILES_RE = re.compile(SMILES_REGEX)


# --------------------------------------------------------------------------------------------
# Chemistry helpers (RDKit / selfies imported lazily: they are optional dependencies)
# --------------------------------------------------------------------------------------------


def rdkit_chem() -> Any:
    """``rdkit.Chem``, with RDKit's log silenced; a one-line error when RDKit is missing."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the molecule task needs RDKit: pip install 'latentebm[mol]' (rdkit, selfies)"
        ) from exc
    RDLogger.DisableLog("rdApp.*")
    return Chem


def selfies_module() -> Any:
    """The ``selfies`` package; a one-line error when it is missing."""
    try:
        import selfies
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "representation 'selfies' needs the selfies package: pip install 'latentebm[mol]'"
        ) from exc
    return selfies


def draw_grid(
    smiles: Sequence[str], path: str | Path, *, per_row: int = 6, cell_size: int = 220
) -> int:
    """Write a PNG grid of the molecules (RDKit drawing), each labelled with its SMILES; an
    invalid string gets an empty cell labelled ``invalid``. Returns the number drawn valid."""
    chem = rdkit_chem()
    from rdkit.Chem import Draw

    if per_row < 1:
        raise ValueError(f"per_row must be >= 1, got {per_row}")
    mols, legends, n_valid = [], [], 0
    for text in smiles:
        mol = chem.MolFromSmiles(text) if text else None
        if mol is None:
            mols.append(chem.Mol())
            legends.append(f"invalid: {text[:28]}")
        else:
            mols.append(mol)
            legends.append(text if len(text) <= 32 else text[:29] + "...")
            n_valid += 1
    image = Draw.MolsToGridImage(
        mols, molsPerRow=per_row, subImgSize=(cell_size, cell_size), legends=legends
    )
    image.save(str(path))
    return n_valid


def tokenize_smiles(smiles: str) -> list[str]:
    """Atom-level SMILES tokens; ``"".join(tokenize_smiles(s)) == s``."""
    return _SMILES_RE.findall(smiles)


def canonical_smiles(smiles: str, canonicalize: bool = True) -> str | None:
    """RDKit canonical isomeric SMILES (or ``smiles`` itself when not ``canonicalize``) if the
    string parses, else ``None``."""
    Chem = rdkit_chem()
    smiles = smiles.strip()
    if not smiles:
        return None
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    return Chem.MolToSmiles(mol, isomericSmiles=True) if canonicalize else smiles


def smiles_tokens(smiles: str, representation: str) -> list[str] | None:
    """Tokens of a (valid) SMILES in the representation; ``None`` when SELFIES encoding fails."""
    if representation == "smiles":
        return tokenize_smiles(smiles)
    sf = selfies_module()
    try:
        encoded = sf.encoder(smiles)
    except Exception:  # selfies.EncoderError and friends
        return None
    if encoded is None:
        return None
    return list(sf.split_selfies(encoded))


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


class MoleculeTokenizer:
    """Token vocabulary for SMILES or SELFIES (specials first, then by training frequency)."""

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(
        self,
        itos: Sequence[str],
        representation: Literal["smiles", "selfies"] = "smiles",
        canonicalize: bool = True,
    ) -> None:
        """Create from an id-to-token list that starts with the four specials."""
        words = check_specials(itos)
        if representation not in ("smiles", "selfies"):
            raise ValueError(
                f"representation must be 'smiles' or 'selfies', got {representation!r}"
            )
        self.itos: list[str] = words
        self.stoi: dict[str, int] = vocabulary_index(words, "tokens")
        self.representation = representation
        self.canonicalize = canonicalize

    @property
    def kind(self) -> str:
        """``"smiles"`` or ``"selfies"``."""
        return self.representation

    @classmethod
    def build(
        cls,
        counts: dict[str, int],
        representation: Literal["smiles", "selfies"] = "smiles",
        canonicalize: bool = True,
        min_freq: int = 1,
    ) -> MoleculeTokenizer:
        """Vocabulary of the tokens counted at least ``min_freq`` times, most frequent first
        (ties alphabetical)."""
        return cls(list(SPECIALS) + frequency_order(counts, min_freq), representation, canonicalize)

    def tokenize(self, smiles: str) -> list[str]:
        """Tokens of one SMILES (canonicalized first when configured and it parses)."""
        smiles = smiles.strip()
        if self.canonicalize:
            smiles = canonical_smiles(smiles) or smiles
        toks = smiles_tokens(smiles, self.representation)
        return [UNK] if toks is None else toks

    def encode(self, smiles: str) -> list[int]:
        """Token ids of one SMILES, without ``<bos>``/``<eos>`` (unknown tokens -> ``<unk>``)."""
        get = self.stoi.get
        return [get(t, UNK_ID) for t in self.tokenize(smiles)]

    def encode_batch(self, smiles: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for each SMILES."""
        return [self.encode(s) for s in smiles]

    def tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens of an id sequence: skips ``<pad>``/``<bos>``, stops at ``<eos>``; ``<unk>``
        and out-of-range ids are dropped."""
        out: list[str] = []
        n = len(self.itos)
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i in (PAD_ID, BOS_ID, UNK_ID) or not 0 <= i < n:
                continue
            out.append(self.itos[i])
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """SMILES of an id sequence (SELFIES decoded with ``selfies.decoder``; ``""`` when that
        fails). SMILES output is the concatenated tokens, valid or not."""
        text = "".join(self.tokens(ids))
        if self.representation == "smiles":
            return text
        try:
            out = selfies_module().decoder(text)
        except Exception:  # selfies.DecoderError and friends
            return ""
        return out or ""

    def __len__(self) -> int:
        return len(self.itos)

    def state_dict(self) -> dict[str, Any]:
        """``{"kind", "itos", "canonicalize"}`` (plain str/list/bool)."""
        return {
            "kind": self.representation,
            "itos": list(self.itos),
            "canonicalize": bool(self.canonicalize),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MoleculeTokenizer:
        """Inverse of :meth:`state_dict`."""
        kind = state.get("kind")
        if kind not in ("smiles", "selfies"):
            raise ValueError(f"unknown molecule tokenizer kind {kind!r} in state dict")
        return cls(state["itos"], kind, bool(state.get("canonicalize", True)))
