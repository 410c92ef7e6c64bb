"""Differential test: `lamb.data.bert_tokenizer` against BERT's own `FullTokenizer`.

    python benchmarks/tokenization_vs_bert.py --bert_dir=../bert

Both tokenize, cased and uncased, (1) every code point in several contexts
and (2) random strings mixing ASCII, accents, combining marks, Greek capital
sigma, CJK, Hangul, emoji, every Unicode space, control and format
characters, U+FFFD, private-use and unassigned code points and words of 150
to 250 letters. Two vocabularies: every word BERT's basic tokenizer makes of
the sample (so the WordPiece output is that word list and any normalization
difference shows), and --vocab_file (BERT's, for real WordPieces). Prints
the counts compared and the first differences; exits 1 on any difference.
"""

import os
import random
import sys
import tempfile
import time
import unicodedata

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from bert_reference import load_bert_module  # noqa: E402  (benchmarks/bert_reference.py)
from lamb.data import pretraining  # noqa: E402
from lamb.data.bert_tokenizer import BertTokenizer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_dir", None, "A google-research/bert checkout.", required=True)
flags.DEFINE_string(
    "vocab_file",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "bert", "vocab_uncased.txt"),
    "A WordPiece vocabulary (BERT's uncased one).",
)
flags.DEFINE_integer("random_strings", 200_000, "Random strings to compare.")
flags.DEFINE_integer("seed", 0, "Seed of the random strings.")
flags.DEFINE_bool("every_code_point", True, "Also compare every code point in each context.")

CONTEXTS = ("{}", "a{}b", "\u0391\u03a3{} \u03a3", "\u03a3{}\u0391", "{}\u0301x")


def _pools():
    """Code point pools the random strings draw from (with weights)."""
    categories = {}
    for cp in range(0x110000):
        if not 0xD800 <= cp <= 0xDFFF:
            categories.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    spaces = categories["Zs"] + [0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0x85, 0x1C, 0x1F, 0x2028, 0x2029]
    return [
        (list(range(0x20, 0x7F)), 30),
        (list(range(0xA0, 0x250)), 8),  # Latin-1 and Latin Extended: accents, ß.
        (categories["Mn"] + categories["Me"] + categories["Mc"], 5),
        ([0x3A3, 0x3C3, 0x3C2, 0x391, 0x130, 0x131, 0x1E9E, 0xDF, 0xFB01, 0x212A], 5),
        (list(range(0x4E00, 0x4F00)) + list(range(0x20000, 0x20100)) + list(range(0xF900, 0xFA00)), 4),
        (list(range(0xAC00, 0xAD00)) + list(range(0x1100, 0x1200)), 4),  # Hangul.
        (list(range(0x1F300, 0x1FAFF)) + [0x200D, 0xFE0F], 4),  # Emoji, ZWJ, VS16.
        (spaces, 8),
        (categories["Cc"] + categories["Cf"] + [0xFFFD], 6),
        (categories["Co"][:5000] + categories["Cn"][:5000], 2),
        (list(range(0xFF01, 0xFF5F)), 3),  # Fullwidth forms.
        ([cp for cat in categories.values() for cp in cat], 6),  # Anything.
    ]


def random_strings(count, seed):
    rng = random.Random(seed)
    pools = _pools()
    weights = [w for _, w in pools]
    strings = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.01:  # A long word around BERT's 200-character limit.
                chars.append("x" * rng.randint(150, 250))
                continue
            pool = rng.choices(pools, weights)[0][0]
            chars.append(chr(rng.choice(pool)))
        strings.append("".join(chars))
    return strings


def words_vocab_file(words):
    """A vocabulary file of BERT's special tokens and `words`."""
    path = os.path.join(tempfile.mkdtemp(), "vocab.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(["[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    return path


def compare(name, bert_tokenizer, ours, strings):
    expected = [bert_tokenizer.tokenize(s) for s in strings]
    got = ours.tokenize(strings)
    bad = [(s, e, g) for s, e, g in zip(strings, expected, got) if e != g]
    print(f"{name}: {len(strings)} strings, {len(bad)} differ")
    for s, e, g in bad[:10]:
        print(f"  {s!r}\n    BERT: {e}\n    ours: {g}")
    return len(bad)


def main(argv):
    del argv
    tokenization = load_bert_module(FLAGS.bert_dir, "tokenization")
    code_points = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    every = []
    if FLAGS.every_code_point:
        every = [context.format(c) for c in code_points for context in CONTEXTS]
        print(f"{len(code_points)} code points x {len(CONTEXTS)} contexts")
    randoms = random_strings(FLAGS.random_strings, FLAGS.seed)
    failures = 0
    for lower in (True, False):
        basic = tokenization.BasicTokenizer(do_lower_case=lower)
        for sample_name, sample in (("every code point", every), ("random strings", randoms)):
            if not sample:
                continue
            words = sorted({w for s in sample for w in basic.tokenize(s)})
            vocabularies = [("the sample's words", words_vocab_file(words))]
            if sample is randoms:
                vocabularies.append(("--vocab_file", FLAGS.vocab_file))
            for vocab_name, vocab_file in vocabularies:
                start = time.perf_counter()
                failures += compare(
                    f"{'uncased' if lower else 'cased'}, {sample_name}, {vocab_name}",
                    tokenization.FullTokenizer(vocab_file, do_lower_case=lower),
                    BertTokenizer(pretraining.load_vocab(vocab_file), do_lower_case=lower),
                    sample,
                )
                print(f"  ({time.perf_counter() - start:.0f} s)")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    app.run(main)
