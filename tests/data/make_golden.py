"""Writes the Unicode test corpus and its golden values, with google-research/bert's code.

    python tests/data/make_golden.py --bert_dir=../bert

Run once; the outputs are committed and read by
tests/test_create_pretraining_data.py (which never runs BERT's code):

- unicode_corpus.txt: `CORPUS` below, as UTF-8 bytes (CRLF and bare CR
  kept; no newline after the last line).
- unicode_vocab.txt: BERT's special tokens, then, for the words BERT's
  basic tokenizer makes of the corpus (cased and uncased, sorted, counting
  from 0): word 4k+1 as its first three letters plus "##" and the rest,
  word 4k+3 left out (so [UNK] or WordPieces of other entries), the others
  whole; Hangul jamo as pieces and "##" pieces, as in BERT's vocabularies.
- unicode_golden_tokens.json: BERT's `FullTokenizer` tokens of each line as
  BERT's tool reads it (`readline`, `convert_to_unicode`, `strip`), cased
  and uncased.
- unicode_golden_records.json: the features of every record BERT's
  `create_pretraining_data.py` writes for the corpus read twice
  (`--input_file=corpus,corpus`), with and without --do_whole_word_mask
  (FLAGS below).
"""

import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))

from bert_reference import load_bert_module  # noqa: E402  (benchmarks/bert_reference.py)

LONG_150 = "pneumono" * 18 + "sixchr"  # 150 letters.
LONG_250 = "abcdefghij" * 25
ACCENTED_150 = "\u00e9" * 150
HANGUL_70 = "\ud55c" * 70
CORPUS = "".join([
    # Accents, ligatures, sharp s, fullwidth forms, ellipsis; CRLF endings.
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u00e0 la fran\u00e7aise.\r\n",
    "Der Flu\u00df ist gro\u00df; STRASSE und Stra\u00dfe \u1e9e.\r\n",
    "UNwant\u00e9d,running na\u00efve coo\u0308perate re\u0301sume\u0301.\r\n",
    "The \ufb01rst \ufb02ight cost \u20ac5\u2026 or \uff26\uff35\uff2c\uff2c \uff28\uff45\uff4c\uff4c\uff4f\uff01\r\n",
    "\r\n",
    # Greek final sigma, dotted I, titlecase digraph, super- and subscripts, numerals.
    "\u039f\u0394\u039f\u03a3 \u03a3\u039f\u03a6\u039f\u03a3 \u03a3 \u0391\u03a3.\u0392 \u1f08\u0398\u0397\u039d\u0391\n",
    "\u0130stanbul \u01c5emal x\u00b2 + y\u2083 = \u216b \u00bd \u2460 \u210c\n",
    "\n",
    # CJK ideographs (unified, extension B, compatibility), Hangul, kana.
    "\u4e2d\u6587\u5b57\u7b26\u6d4b\u8bd5\uff0c\u5317\u4eac\u5927\u5b66\u3002\n",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4. \uac00\uac01\n",
    "\u3072\u3089\u304c\u306a \u30ab\u30bf\u30ab\u30ca \U00020000\U00020001 \uf900\U0002f800\n",
    "\n",
    # Emoji: skin tone, ZWJ family, variation selector, flag.
    "Emoji \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 \u2764\ufe0f \U0001f1eb\U0001f1f7 done\n",
    "[MASK] and [CLS] are text here, #hashtag @user 100% $5^2 a`b|c~d\n",
    "\n",
    # Control and format characters (BERT deletes them, joining the pieces).
    "co\u00adoperate zero\u200bwidth joi\u200dner bom\ufeffhere\n",
    "nul\x00byte vertical\x0btab form\x0cfeed next\x85line\n",
    "bell\x07 esc\x1b del\x7f replacement\ufffdchar \u200emark \u2066iso\u2069 \U000e0041tag\n",
    "\x00\n",  # Not blank for BERT (strip keeps NUL) but no tokens: no document break.
    "\u200b\ufeff\n",
    # Every Unicode space (category Zs), then tab, CR, line and paragraph separators.
    "a\u00a0b\u1680c\u2000d\u2001e\u2002f\u2003g\u2004h\u2005i\u2006j\u2007k\u2008l"
    "\u2009m\u200an\u202fo\u205fp\u3000q r\n",
    "tab\tsep cr\rsep line\u2028sep para\u2029sep fs\x1cgs\x1drs\x1eus\x1fend\n",
    "\u3000\x0c \t\x85\r\n",  # Blank after strip: a document break.
    # Words of 150 and 250 letters (BERT's limit: 200), 200 and 201, and
    # 150 accented letters (150 after accent stripping, 300 code points in NFD).
    f"short {LONG_150} mid {LONG_250} end\n",
    f"{'x' * 200} {'y' * 201} {ACCENTED_150} {HANGUL_70}\n",
    "\n",
    "\n",
    "\n",
    # Private use, unassigned and noncharacter code points.
    "private\ue000use unassigned\u0378here non\ufffechar \U0010fffd\n",
    "last line without newline",
])
FLAGS = {
    "max_seq_length": 32, "max_predictions_per_seq": 5, "dupe_factor": 2,
    "masked_lm_prob": 0.15, "short_seq_prob": 0.1, "random_seed": 7,
}
FEATURES = (
    ("input_ids", "int64_list"), ("input_mask", "int64_list"), ("segment_ids", "int64_list"),
    ("masked_lm_positions", "int64_list"), ("masked_lm_ids", "int64_list"),
    ("masked_lm_weights", "float_list"), ("next_sentence_labels", "int64_list"),
)


def bert_lines(tf1, tokenization, path):
    """The lines of `path` as BERT's `create_training_instances` reads them."""
    lines = []
    with tf1.gfile.GFile(path, "r") as reader:
        while True:
            line = tokenization.convert_to_unicode(reader.readline())
            if not line:
                return lines
            lines.append(line.strip())


def make_vocab(tokenization, lines):
    words = sorted({
        word
        for lower in (True, False)
        for line in lines
        for word in tokenization.BasicTokenizer(do_lower_case=lower).tokenize(line)
    })
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for index, word in enumerate(words):
        if index % 4 == 1 and len(word) > 3:
            vocab += [word[:3], "##" + word[3:]]
        elif index % 4 != 3:
            vocab.append(word)
    jamo = sorted({c for w in words for c in w if 0x1100 <= ord(c) <= 0x11FF})
    vocab += jamo + ["##" + c for c in jamo]
    return list(dict.fromkeys(vocab))


def read_records(tf1, path):
    records = []
    for serialized in tf1.io.tf_record_iterator(path):
        features = tf1.train.Example.FromString(serialized).features.feature
        records.append(
            {name: list(getattr(features[name], kind).value) for name, kind in FEATURES}
        )
    return records


def main():
    if len(sys.argv) != 2 or not sys.argv[1].startswith("--bert_dir="):
        sys.exit(__doc__)
    bert_dir = sys.argv[1].split("=", 1)[1]
    import tensorflow.compat.v1 as tf1

    tokenization = load_bert_module(bert_dir, "tokenization")
    corpus = os.path.join(HERE, "unicode_corpus.txt")
    with open(corpus, "wb") as f:
        f.write(CORPUS.encode("utf-8"))
    lines = bert_lines(tf1, tokenization, corpus)
    vocab_file = os.path.join(HERE, "unicode_vocab.txt")
    with open(vocab_file, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(token + "\n" for token in make_vocab(tokenization, lines)))
    tokens = {
        name: [tokenization.FullTokenizer(vocab_file, do_lower_case=lower).tokenize(line)
               for line in lines]
        for name, lower in (("uncased", True), ("cased", False))
    }
    with open(os.path.join(HERE, "unicode_golden_tokens.json"), "w", encoding="utf-8") as f:
        lists = {"lines": lines, **tokens}
        f.write("{\n" + ",\n".join(
            json.dumps(key) + ": [\n" + ",\n".join(json.dumps(item) for item in items) + "\n]"
            for key, items in lists.items()
        ) + "\n}\n")
    records = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in (("per_wordpiece", []), ("whole_word", ["--do_whole_word_mask"])):
            output = os.path.join(tmp, f"{name}.tfrecord")
            subprocess.run(
                [sys.executable, os.path.join(HERE, "..", "..", "benchmarks", "bert_reference.py"),
                 f"--bert_dir={bert_dir}", "--", f"--input_file={corpus},{corpus}",
                 f"--output_file={output}", f"--vocab_file={vocab_file}",
                 *(f"--{k}={v}" for k, v in FLAGS.items()), *extra],
                check=True, capture_output=True,
            )
            records[name] = read_records(tf1, output)
    with open(os.path.join(HERE, "unicode_golden_records.json"), "w", encoding="utf-8") as f:
        json.dump({"flags": FLAGS, **records}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
