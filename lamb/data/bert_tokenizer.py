"""BERT's WordPiece tokenization (`FullTokenizer`, cased and uncased), exactly.

google-research/bert's rules, applied to a line of text:

1. Delete U+0000, U+FFFD and control and format characters (categories Cc
   and Cf) other than tab, newline and carriage return.
2. Whitespace ("\\t", "\\n", "\\r", category Zs, and what Python's
   `str.split` splits on: U+2028, U+2029) separates words.
3. Put spaces around CJK ideographs (BERT's list of blocks).
4. Uncased: `str.lower()` (with its final-sigma rule), then NFD and delete
   the nonspacing marks (category Mn).
5. Split off each punctuation character (ASCII symbols and category P*).
6. WordPiece: greedy longest match first with "##" continuations; a word of
   more than 200 characters, or one the vocabulary cannot cover, is [UNK].

Steps 1-4 are done here in Python, by `re` character classes and `str`
methods built from this interpreter's `unicodedata`, as BERT's code (which
uses the same functions) does them. The `tokenizers` library's own
`BertNormalizer` and `BertPreTokenizer` (uncased) differ from BERT's code
for 1,107,812 of the 1,112,064 code points in one of three contexts: no
final sigma (ς), private-use and unassigned characters deleted (BERT keeps
them), no CJK block U+2B820-U+2CEAF, and categories from Rust tables of
another Unicode version (U+061D, U+2E55 are not punctuation there). Steps
5-6 run in `tokenizers` (Rust, batched): splitting on " " and on an explicit
class of BERT's punctuation (so no Unicode table of its own is involved),
and its `WordPiece` model, which is BERT's algorithm.
`benchmarks/tokenization_vs_bert.py` compares the result with BERT's own
code over every code point and random strings.
"""

import functools
import itertools
import re
import unicodedata

import numpy as np

UNK = "[UNK]"
MAX_CHARS_PER_WORD = 200  # BERT's max_input_chars_per_word.

# BERT's `_is_chinese_char` blocks (inclusive code point ranges).
CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


def _ranges(mask):
    """Inclusive (first, last) code point ranges where the boolean array
    `mask` (indexed by code point) is true."""
    edges = np.flatnonzero(np.diff(np.concatenate([[False], mask, [False]])))
    return list(zip(edges[0::2].tolist(), (edges[1::2] - 1).tolist()))


def _python_class(ranges):
    parts = (re.escape(chr(a)) + ("" if a == b else "-" + re.escape(chr(b))) for a, b in ranges)
    return "[" + "".join(parts) + "]"


def _rust_class(ranges):
    """The class for `tokenizers.Regex` (Oniguruma syntax)."""
    parts = (f"\\x{{{a:X}}}" + ("" if a == b else f"-\\x{{{b:X}}}") for a, b in ranges)
    return "[" + "".join(parts) + "]"


@functools.cache
def _classes():
    """The compiled classes of steps 1-5 (step 5's for `tokenizers`), from
    this interpreter's `unicodedata` (built once per process)."""
    chars = [chr(cp) for cp in range(0x110000)]
    category = np.array([unicodedata.category(c) for c in chars])
    code_point = np.arange(0x110000)
    is_space = np.array([c.isspace() for c in chars])
    tab_newline_cr = np.isin(code_point, [0x09, 0x0A, 0x0D])
    deleted = np.isin(code_point, [0x00, 0xFFFD]) | (
        np.isin(category, ["Cc", "Cf"]) & ~tab_newline_cr
    )
    # Whitespace but " " (kept) and "\n" (the line separator here).
    space = (tab_newline_cr | (category == "Zs") | is_space) & ~deleted & ~np.isin(
        code_point, [0x20, 0x0A]
    )
    ascii_symbol = ((33 <= code_point) & (code_point <= 47)) | ((58 <= code_point) & (code_point <= 64)) | (
        (91 <= code_point) & (code_point <= 96)) | ((123 <= code_point) & (code_point <= 126))
    punctuation = ascii_symbol | np.char.startswith(category, "P")
    return {
        "delete": re.compile(_python_class(_ranges(deleted))),
        "space": re.compile(_python_class(_ranges(space))),
        "cjk": re.compile(_python_class(CJK_RANGES)),
        "nonspacing_mark": re.compile(_python_class(_ranges(category == "Mn"))),
        "punctuation": _rust_class(_ranges(punctuation)),
    }


def normalize(text, do_lower_case):
    """Steps 1-4 on `text` (lines joined by "\\n", which is kept)."""
    classes = _classes()
    text = classes["space"].sub(" ", classes["delete"].sub("", text))
    if text.isascii():
        return text.lower() if do_lower_case else text
    text = classes["cjk"].sub(r" \g<0> ", text)
    if do_lower_case:
        text = classes["nonspacing_mark"].sub("", unicodedata.normalize("NFD", text.lower()))
    return text


class BertTokenizer:
    """BERT's `FullTokenizer` for `vocab` (tokens in id order; a repeated
    token takes its last id, as in BERT's `load_vocab`).

    One core: set TOKENIZERS_PARALLELISM=false or `tokenizers` also spreads
    a batch over threads.
    """

    def __init__(self, vocab, do_lower_case=True):
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        if UNK not in vocab:
            raise ValueError(f"The vocabulary lacks {UNK}.")
        self.do_lower_case = do_lower_case
        self.vocab = np.array(vocab, dtype=object)
        token_ids = {token: i for i, token in enumerate(vocab)}
        self._tokenizer = Tokenizer(
            models.WordPiece(
                token_ids, unk_token=UNK, max_input_chars_per_word=MAX_CHARS_PER_WORD,
                continuing_subword_prefix="##",
            )
        )
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.CharDelimiterSplit(" "),
            pre_tokenizers.Split(Regex(_classes()["punctuation"]), "isolated"),
        ])

    def tokenize_ids(self, lines):
        """(lengths, ids): the number of WordPiece ids of each line and all the
        ids, concatenated (NumPy int64 and int32 arrays)."""
        text = "\n".join(lines)
        if text.count("\n") != max(len(lines) - 1, 0):  # "\n" within a line: a space, for BERT.
            text = "\n".join(line.replace("\n", " ") for line in lines)
        normalized = normalize(text, self.do_lower_case).split("\n") if lines else []
        encodings = self._tokenizer.encode_batch_fast(normalized, add_special_tokens=False)
        lengths = np.array([len(encoding) for encoding in encodings], dtype=np.int64)
        ids = np.fromiter(
            itertools.chain.from_iterable(encoding.ids for encoding in encodings),
            dtype=np.int32, count=int(lengths.sum()),
        )
        return lengths, ids

    def tokenize(self, lines):
        """The WordPiece tokens (lists of str) of each line."""
        lengths, ids = self.tokenize_ids(lines)
        return split_tokens(self.vocab[ids].tolist(), lengths)


def split_tokens(tokens, lengths):
    """`tokens` cut into consecutive lists of `lengths`."""
    ends = np.cumsum(lengths).tolist()
    return [tokens[end - length : end] for end, length in zip(ends, lengths.tolist())]
