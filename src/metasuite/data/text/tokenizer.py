"""Tokenisation: Hugging Face ``tokenizers`` (WordPiece trained on the training split)
or a local model folder's tokenizer through ``transformers``.

The only module of the data layer that imports Hugging Face packages, lazily, so
``python -m metasuite --help`` and image experiments never load them. Offline by
design: a name that is not a local folder (a hub id) is refused with one line saying
how to save the model into a folder on a connected machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metasuite.errors import ConfigError, DatasetError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
KEPT_FOLDER = "tokenizer"
"""The experiment folder's copy of its tokenizer: ``<experiment>/tokenizer/``."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer.model", "vocab.json", "spiece.model")


def _import(package: str) -> Any:
    try:
        return __import__(package)
    except ImportError:
        raise ConfigError(
            f"text data needs the Python package {package!r}: run ./install.sh (or "
            'pip install -e ".[text]")'
        ) from None


@dataclass(frozen=True)
class TextTokenizer:
    """Token ids for texts: ``encode(texts, max_length)``; ``pad_id``; ``vocab_size``.

    ``source`` says where it came from (``"wordpiece"`` or the folder); ``digest`` is a
    sha256 of its full definition (part of the token-id cache key and the split hash).
    """

    backend: Any
    source: str
    pad_id: int
    vocab_size: int
    digest: str
    fast: bool  # a tokenizers.Tokenizer (True) or a transformers tokenizer (False)
    definition: str = ""  # a trained tokenizer's JSON, exactly as hashed and kept

    def encode(self, texts: list[str], max_length: int) -> list[list[int]]:
        if self.fast:
            self.backend.enable_truncation(max_length)
            return [e.ids for e in self.backend.encode_batch(texts)]
        out = self.backend(texts, truncation=True, max_length=max_length)
        return [list(ids) for ids in out["input_ids"]]


def train_wordpiece(texts: list[str], vocab_size: int) -> str:
    """A BERT-style uncased WordPiece tokenizer trained on ``texts``, as its JSON."""
    tokenizers = _import("tokenizers")
    from tokenizers import models, normalizers, pre_tokenizers, processors, trainers

    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tok.train_from_iterator(sorted(texts), trainer=trainer)  # sorted: order-independent
    # The trainer finds the same vocabulary each time but numbers it in hash-map order
    # (measured: ids differ between two trainings on the same texts). Renumber it:
    # special tokens first, in SPECIAL_TOKENS order, then the rest sorted, so a tokenizer
    # rebuilt from the same training split gives the very same ids.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    rest = sorted(t for t in vocab if t not in SPECIAL_TOKENS)
    spec["model"]["vocab"] = {t: i for i, t in enumerate([*SPECIAL_TOKENS, *rest])}
    for added in spec.get("added_tokens") or []:
        added["id"] = spec["model"]["vocab"][added["content"]]
    tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    return tok.to_str()


def from_json(text: str, source: str) -> TextTokenizer:
    """A WordPiece tokenizer saved by :func:`train_wordpiece`."""
    tokenizers = _import("tokenizers")
    tok = tokenizers.Tokenizer.from_str(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    pad, size = tok.token_to_id("[PAD]"), tok.get_vocab_size()
    return TextTokenizer(tok, source, pad, size, digest, True, text)


def offline_hint(name: str) -> str:
    """How to save a hub model into a folder (this machine never downloads)."""
    target = f"models/{name.split('/')[-1]}"
    code = (
        "from transformers import AutoModel, AutoTokenizer; "
        f"[c.from_pretrained('{name}').save_pretrained('{target}') "
        "for c in (AutoTokenizer, AutoModel)]"
    )
    return f'on a connected machine run: python -c "{code}" and copy that folder here'


def model_folder(name: str, key: str, base: Path) -> Path:
    """``name`` as a local folder (absolute, or relative to ``base``); a hub id, or a
    folder that is not there, is one line naming ``key`` and how to get it."""
    path = Path(name).expanduser()
    path = path if path.is_absolute() else base / path
    if path.is_dir():
        return path
    if Path(name).is_dir():
        return Path(name).resolve()
    raise ConfigError(
        f"{key} {name!r}: no such folder under {base}, and metasuite runs offline (it never "
        f"downloads from the Hugging Face hub); {offline_hint(name)}"
    )


def from_folder(folder: Path, key: str) -> TextTokenizer:
    """The tokenizer of a local model folder (``local_files_only``)."""
    if not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(
            f"{key} {str(folder)!r}: the folder holds no tokenizer (none of "
            f"{', '.join(TOKENIZER_FILES)}); save one with tokenizer.save_pretrained(folder)"
        )
    _import("transformers")
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:
        raise ConfigError(
            f"{key} {str(folder)!r}: cannot load its tokenizer ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]})"
        ) from None
    if tok.pad_token_id is None:
        raise DatasetError(f"{key} {str(folder)!r}: the tokenizer has no padding token")
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.is_file()):
        if name.startswith(("tokenizer", "vocab", "special_tokens", "spiece", "merges")):
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return TextTokenizer(
        tok, str(folder), int(tok.pad_token_id), len(tok), digest.hexdigest(), False
    )


def save_tokenizer(tokenizer: TextTokenizer, folder: Path) -> None:
    """``folder/tokenizer.json`` (trained) or the folder tokenizer's own files, written
    atomically; left alone when it already holds this tokenizer."""
    from metasuite.fsutil import write_text_atomic

    stamp = folder / "sha256.txt"
    if stamp.is_file() and stamp.read_text().strip() == tokenizer.digest:
        return
    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer.fast:
        write_text_atomic(folder / "tokenizer.json", tokenizer.definition)
    else:
        tokenizer.backend.save_pretrained(str(folder))
    write_text_atomic(stamp, tokenizer.digest + "\n")


def describe(tokenizer: TextTokenizer) -> dict[str, Any]:
    """What the manifest and ``data check`` show."""
    return json.loads(
        json.dumps(
            {
                "source": tokenizer.source,
                "vocab_size": tokenizer.vocab_size,
                "pad_id": tokenizer.pad_id,
                "sha256": tokenizer.digest,
            }
        )
    )


__all__ = [
    "KEPT_FOLDER",
    "SPECIAL_TOKENS",
    "TextTokenizer",
    "describe",
    "from_folder",
    "from_json",
    "model_folder",
    "offline_hint",
    "save_tokenizer",
    "train_wordpiece",
]
