"""`lamb.create_pretraining_data`: BERT's tokenization, instances and record format."""

import collections
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
import unicodedata

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tokenizers")

from lamb.data import pretraining  # noqa: E402
from lamb.data.bert_tokenizer import BertTokenizer  # noqa: E402
from tests import pretraining_helpers as helpers  # noqa: E402

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
UNICODE_CORPUS = os.path.join(DATA, "unicode_corpus.txt")
UNICODE_VOCAB = os.path.join(DATA, "unicode_vocab.txt")

# google-research/bert's tokenization_test.py: vocabulary and expected tokens.
BERT_TEST_VOCAB = [
    "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn",
    "##ing", ",", "hello", "!", "how", "are", "you", "?", "ah", "\u535A", "\u63A8", "zz",
    "HeLLo", "Are", "yoU",
]

# BERT's run_pretraining.py `name_to_features`, written out independently.
BERT_NAME_TO_FEATURES = {
    "input_ids": tf.io.FixedLenFeature([helpers.SEQ_LENGTH], tf.int64),
    "input_mask": tf.io.FixedLenFeature([helpers.SEQ_LENGTH], tf.int64),
    "segment_ids": tf.io.FixedLenFeature([helpers.SEQ_LENGTH], tf.int64),
    "masked_lm_positions": tf.io.FixedLenFeature([helpers.PREDICTIONS], tf.int64),
    "masked_lm_ids": tf.io.FixedLenFeature([helpers.PREDICTIONS], tf.int64),
    "masked_lm_weights": tf.io.FixedLenFeature([helpers.PREDICTIONS], tf.float32),
    "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64),
}


@pytest.mark.parametrize(
    "lower, text, expected",
    [
        (True, "UNwant\u00E9d,running", ["un", "##want", "##ed", ",", "runn", "##ing"]),
        (True, " \tHeLLo!how  \n Are yoU?  ", ["hello", "!", "how", "are", "you", "?"]),
        (False, " \tHeLLo!how  \n Are yoU?  ", ["HeLLo", "!", "how", "Are", "yoU", "?"]),
        (True, "ah\u535A\u63A8zz", ["ah", "\u535A", "\u63A8", "zz"]),
        (True, "unwanted running", ["un", "##want", "##ed", "runn", "##ing"]),
        (True, "unwantedX running", ["[UNK]", "runn", "##ing"]),
    ],
)
def test_tokenization_matches_bert_golden_tokens(lower, text, expected):
    assert BertTokenizer(BERT_TEST_VOCAB, do_lower_case=lower).tokenize([text]) == [expected]


# Expected tokens written by hand from BERT's rules (tokenization.py): str.lower()
# then NFD without nonspacing marks (no NFKC: ß, ligatures, fullwidth forms,
# superscripts and "…" stay), control and format characters deleted, Zs and
# \t\n\r (and U+2028/U+2029, which str.split splits on) separate words, CJK
# ideographs and punctuation are words of their own, words over 200 characters
# are [UNK].
RULES_VOCAB = [
    "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "straße", "strasse", "\ufb01", "##rst",
    "first", "wait", "\u2026", "...", "\u03bf\u03b4\u03bf\u03c2", "\u03bf\u03b4\u03bf\u03c3", "x",
    "##\u00b2", "##2", "\u217b", "xii", "\u1112", "##\u1161", "##\u11ab", "\ud55c", "cooperate",
    "co", "operate", "a", "##a", "\u00e9", "##\u00e9", "e", "##e", "\u4e2d", "\u6587", "cafe",
    "Caf\u00e9", "\uff48\uff45\uff4c\uff4c\uff4f", "\u2764", "\u2764\ufe0f",
]
SPACES = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Zs"] + [
    "\t", "\n", "\r", "\u2028", "\u2029",
]
DELETED = ["\u00ad", "\u200b", "\u200d", "\ufeff", "\x00", "\x0b", "\x0c", "\x85", "\x7f",
           "\x1c", "\ufffd", "\U000e0041"]


@pytest.mark.parametrize(
    "lower, text, expected",
    [
        (True, "Stra\u00dfe STRASSE", ["straße", "strasse"]),
        (True, "\ufb01rst", ["\ufb01", "##rst"]),
        (True, "\uff28\uff45\uff4c\uff4c\uff4f", ["\uff48\uff45\uff4c\uff4c\uff4f"]),
        (True, "Wait\u2026", ["wait", "\u2026"]),
        (True, "\u039f\u0394\u039f\u03a3", ["\u03bf\u03b4\u03bf\u03c2"]),  # Final sigma.
        (True, "x\u00b2", ["x", "##\u00b2"]),
        (True, "\u216b", ["\u217b"]),
        (True, "\ud55c", ["\u1112", "##\u1161", "##\u11ab"]),  # Hangul: NFD jamo.
        (False, "\ud55c", ["\ud55c"]),
        (True, "Caf\u00e9", ["cafe"]),
        (False, "Caf\u00e9", ["Caf\u00e9"]),
        (True, "\u4e2d\u6587", ["\u4e2d", "\u6587"]),
        (True, "\u2764\ufe0f", ["\u2764"]),  # U+FE0F is a nonspacing mark.
        (False, "\u2764\ufe0f", ["\u2764\ufe0f"]),
        (True, "a" * 200, ["a"] + ["##a"] * 199),
        (True, "a" * 201, ["[UNK]"]),
        (False, "\u00e9" * 120, ["\u00e9"] + ["##\u00e9"] * 119),  # 240 bytes, 120 characters.
        (True, "\u00e9" * 120, ["e"] + ["##e"] * 119),
    ],
)
def test_tokenization_follows_berts_rules(lower, text, expected):
    assert BertTokenizer(RULES_VOCAB, do_lower_case=lower).tokenize([text]) == [expected]


@pytest.mark.parametrize("lower", [True, False])
def test_every_unicode_space_separates_and_control_and_format_characters_vanish(lower):
    tokenizer = BertTokenizer(RULES_VOCAB, do_lower_case=lower)
    lines = [f"co{space}operate" for space in SPACES]
    assert tokenizer.tokenize(lines) == [["co", "operate"]] * len(lines)
    lines = [f"co{char}operate" for char in DELETED]
    assert tokenizer.tokenize(lines) == [["cooperate"]] * len(lines)


def _golden(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


def _lines_and_tokens(path, vocab, lower):
    """Each line of `path` as read for BERT's tool: None if blank, else its tokens."""
    with open(path, "rb") as f:
        lengths, ids = pretraining.tokenize_chunk(f.read(), BertTokenizer(vocab, lower))
    tokens = iter(vocab[i] for i in ids)
    return [None if n < 0 else [next(tokens) for _ in range(n)] for n in lengths.tolist()]


@pytest.mark.parametrize("case", ["uncased", "cased"])
def test_unicode_corpus_tokens_equal_berts(case):
    """tests/data/unicode_golden_tokens.json: BERT's FullTokenizer on each line
    of the corpus as BERT's tool reads it (tests/data/make_golden.py)."""
    golden = _golden("unicode_golden_tokens.json")
    vocab = pretraining.load_vocab(UNICODE_VOCAB)
    got = _lines_and_tokens(UNICODE_CORPUS, vocab, case == "uncased")
    assert [line == "" for line in golden["lines"]] == [tokens is None for tokens in got]
    assert [tokens or [] for tokens in got] == golden[case]


def _parsed_records(path):
    records = []
    for serialized in tf.data.TFRecordDataset(path):
        features = tf.train.Example.FromString(serialized.numpy()).features.feature
        records.append({
            name: list(getattr(features[name], features[name].WhichOneof("kind")).value)
            for name in BERT_NAME_TO_FEATURES
        })
    return records


@pytest.mark.parametrize("whole_word, processes", [(False, 1), (True, 2)])
def test_unicode_corpus_records_equal_berts(tmp_path, whole_word, processes):
    """tests/data/unicode_golden_records.json: every record BERT's tool wrote
    for the corpus read twice, with the flags stored there."""
    golden = _golden("unicode_golden_records.json")
    flags = golden["flags"]
    output = str(tmp_path / "new" / "folder" / "records.tfrecord")  # Folders created.
    count, _ = pretraining.create_pretraining_files(
        [UNICODE_CORPUS, UNICODE_CORPUS], [output], pretraining.load_vocab(UNICODE_VOCAB),
        do_lower_case=True, do_whole_word_mask=whole_word, num_processes=processes,
        chunk_bytes=300, **flags,
    )
    expected = golden["whole_word" if whole_word else "per_wordpiece"]
    assert count == len(expected) > 20
    assert _parsed_records(output) == expected


def test_parallel_tokenization_equals_serial_whatever_the_chunks():
    vocab = pretraining.load_vocab(UNICODE_VOCAB)
    files = [UNICODE_CORPUS, UNICODE_CORPUS]
    serial = pretraining.read_documents(files, vocab, True, num_processes=1)
    for processes, chunk_bytes in ((2, 64), (3, 1000)):
        assert pretraining.read_documents(files, vocab, True, processes, chunk_bytes) == serial
    # 7 documents per copy; the last one runs on into the next file, as in BERT.
    golden = _golden("unicode_golden_tokens.json")["uncased"]
    assert len(serial) == 13
    assert serial[6] == [golden[i] for i in (28, 29, 0, 1, 2, 3)]


def test_progress_lines_give_the_rate_and_the_time_left(caplog):
    caplog.set_level(logging.INFO)
    progress = pretraining.Progress("Tokenized", 10_000_000, " MB", 1e6, interval=0.0)
    progress.add(2_500_000)
    assert caplog.records[-1].getMessage().startswith("Tokenized: 2.5 MB of 10.0 MB (")
    assert caplog.records[-1].getMessage().endswith(" s left")
    pretraining.read_documents([UNICODE_CORPUS], pretraining.load_vocab(UNICODE_VOCAB), True)
    info = [record.getMessage() for record in caplog.records if record.levelname == "INFO"]
    assert info[-1].startswith("Tokenized (1 process): 0.0 MB in ")


def test_a_file_that_is_not_utf8_is_named_with_its_byte_offset_and_line(tmp_path):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_bytes("fine\n".encode() * 10)
    bad.write_bytes(b"one\r\ntwo \xe9t\xe9\n")  # Latin-1, not UTF-8; the offset counts the \r.
    with pytest.raises(
        ValueError,
        match=r"--input_file: .*bad\.txt is not UTF-8 text: byte offset 9 \(line 2\): b'\\xe9'",
    ):
        pretraining.read_documents([str(good), str(bad)], RULES_VOCAB, True)


def test_carriage_returns_are_dropped_as_berts_reader_drops_them(tmp_path):
    """TensorFlow's `readline` (BERT's reader) drops every "\\r" byte, even
    within a line and inside a character's bytes."""
    path = tmp_path / "cr.txt"
    path.write_bytes(b"caf\xc3\r\xa9\r\nco\roperate\r\n\r\nhello\r")
    assert pretraining.read_documents([str(path)], RULES_VOCAB, True) == [
        [["cafe"], ["cooperate"]], [["hello"]],
    ]


def test_missing_or_bad_files_and_flags_are_named_before_any_work(tmp_path):
    with pytest.raises(FileNotFoundError, match="--vocab_file: .*nothing.txt does not exist"):
        pretraining.load_vocab(str(tmp_path / "nothing.txt"))
    (tmp_path / "latin1.txt").write_bytes(b"[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf\xe9\n")
    with pytest.raises(ValueError, match="--vocab_file: .*latin1.txt is not UTF-8 text: byte offset 28"):
        pretraining.load_vocab(str(tmp_path / "latin1.txt"))
    with pytest.raises(FileNotFoundError, match="--input_file: .*nothing-here"):
        pretraining.expand_input_files(str(tmp_path / "nothing-here*.txt"))
    with pytest.raises(ValueError, match="--num_processes"):
        pretraining.read_documents([UNICODE_CORPUS], RULES_VOCAB, True, num_processes=0)
    with pytest.raises(ValueError, match="^--vocab_file: .* is a folder"):
        pretraining.load_vocab(str(tmp_path))
    if os.path.exists("/dev/zero"):  # Endless: read as text, it would never end.
        with pytest.raises(ValueError, match="^--vocab_file: /dev/zero is not a regular file"):
            pretraining.load_vocab("/dev/zero")
        with pytest.raises(ValueError, match="^--input_file: /dev/zero is not a regular file"):
            pretraining.expand_input_files("/dev/zero")
    (tmp_path / "texts").mkdir()
    with pytest.raises(ValueError, match="^--input_file: .*texts is a folder, not a file"):
        pretraining.expand_input_files(f"{UNICODE_CORPUS},{tmp_path / 'tex*'}")


def test_input_without_a_token_is_named(tmp_path):
    """NUL and control characters are deleted by BERT's tokenizer: no line is left."""
    path = tmp_path / "controls.txt"
    path.write_bytes(b"\x00\x01\x02\n\n\x00\n")
    with pytest.raises(ValueError, match=r"^--input_file: .*controls\.txt holds no line with a token"):
        _create_unicode_records([str(tmp_path / "out.tfrecord")], [str(path)])


@pytest.mark.parametrize("lower, message", [
    (True, "--do_lower_case=true, but 2 tokens of the vocabulary have upper-case letters (Hello, "),
    (False, "--do_lower_case=false, but no token of the vocabulary has an upper-case letter"),
])
def test_a_vocabulary_of_the_other_case_is_warned_about(caplog, lower, message):
    vocab = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    if lower:
        vocab += ["Hello", "World"]
    pretraining.warn_if_case_mismatch(vocab, lower)
    assert caplog.records[-1].getMessage().startswith(message)
    caplog.clear()
    pretraining.warn_if_case_mismatch(vocab, not lower)
    assert not caplog.records


def test_a_vocabulary_that_cannot_spell_the_text_is_warned_about(tmp_path, caplog):
    path = tmp_path / "text.txt"
    path.write_text("hello world\nhello there\n\nhello you\n")  # 2 of 6 words unknown.
    vocab = ["[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]
    pretraining.read_documents([str(path)], vocab + ["there", "you"], True)
    assert not [record for record in caplog.records if record.levelname == "WARNING"]
    pretraining.read_documents([str(path)], vocab, True)
    assert caplog.records[-1].getMessage().startswith(
        "33% of the 6 tokens of --input_file are [UNK] (words --vocab_file cannot spell)"
    )


def test_the_app_reports_a_folder_as_input_on_one_line(tmp_path):
    result = subprocess.run(
        _app_command(str(tmp_path), UNICODE_VOCAB, [str(tmp_path / "out.tfrecord")]),
        env=helpers.app_env(), cwd=helpers.REPO, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"create_pretraining_data: error: --input_file: {tmp_path} is a folder, not a file."
    )
    assert "Traceback" not in result.stderr


def _create_unicode_records(outputs, inputs=(UNICODE_CORPUS,), vocab_file=UNICODE_VOCAB):
    """`create_pretraining_files` on the Unicode corpus with its golden flags."""
    return pretraining.create_pretraining_files(
        list(inputs), list(outputs), pretraining.load_vocab(UNICODE_VOCAB), do_lower_case=True,
        do_whole_word_mask=False, vocab_file=vocab_file,
        **_golden("unicode_golden_records.json")["flags"],
    )


def test_outputs_that_would_destroy_data_or_cannot_be_written_are_refused_before_any_work(
    tmp_path,
):
    """The input is not UTF-8: an output refused after reading would name the input instead."""
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    vocab_copy = tmp_path / "vocab.txt"
    vocab_copy.write_bytes(open(UNICODE_VOCAB, "rb").read())
    (tmp_path / "link.txt").symlink_to(latin1)
    os.link(latin1, tmp_path / "hard-link.txt")
    (tmp_path / "a-file").write_text("")
    out = str(tmp_path / "out.tfrecord")
    cases = [
        ([str(tmp_path / "sub" / ".." / "latin1.txt")], "latin1.txt is also read as --input_file"),
        ([str(tmp_path / "link.txt")], "link.txt is also read as --input_file"),
        ([str(tmp_path / "hard-link.txt")], "hard-link.txt is also read as --input_file"),
        ([str(vocab_copy)], "vocab.txt is also read as --vocab_file"),
        ([out, out], "out.tfrecord is given more than once"),
        ([str(tmp_path)], "is a folder; give a file name"),
        ([str(tmp_path / "a-file" / "out.tfrecord")], "a-file is a file, not a folder"),
        ([out, ""], "an empty name"),
    ]
    if os.path.exists("/dev/full"):
        cases.append((["/dev/full"], "/dev/full is not a regular file"))
    for outputs, message in cases:
        with pytest.raises(ValueError, match=f"^--output_file: .*{message}"):
            _create_unicode_records(outputs, [str(latin1)], str(vocab_copy))
    assert latin1.read_bytes() == b"caf\xe9\n"
    assert sorted(os.listdir(tmp_path)) == [
        "a-file", "hard-link.txt", "latin1.txt", "link.txt", "vocab.txt",
    ]


def test_a_failed_run_leaves_the_previous_output_and_no_partial_file(tmp_path):
    output = tmp_path / "records.tfrecord"
    output.write_bytes(b"previous records")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9\n")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        _create_unicode_records([str(output)], [UNICODE_CORPUS, str(latin1)])
    assert output.read_bytes() == b"previous records"
    assert sorted(os.listdir(tmp_path)) == ["latin1.txt", "records.tfrecord"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (a full disk)")
def test_a_full_disk_is_named_in_one_line():
    vocab = pretraining.load_vocab(UNICODE_VOCAB)
    documents = pretraining.read_documents([UNICODE_CORPUS], vocab, True)
    instances = pretraining.create_training_instances(
        documents, vocab, 32, 1, 0.1, 0.15, 5, False, random.Random(0)
    )
    with pytest.raises(
        RuntimeError, match="^--output_file: writing the records failed: .*No space left on device"
    ):
        pretraining.write_instance_to_example_files(instances, vocab, 32, 5, ["/dev/full"])


def test_two_runs_cannot_write_one_output(tmp_path):
    output = str(tmp_path / "records.tfrecord")
    with pretraining.written_whole([output], {}) as (partial,):
        with pytest.raises(RuntimeError, match="^--output_file: .* is being written by another run"):
            _create_unicode_records([output])
        with open(partial, "wb") as file:
            file.write(b"the first run's records")
    with open(output, "rb") as file:
        assert file.read() == b"the first run's records"
    assert _create_unicode_records([output])[0] > 20  # Free again once the first run is done.


def test_a_run_killed_while_writing_leaves_the_previous_output_whole(tmp_path):
    corpus, vocab = str(tmp_path / "corpus.txt"), str(tmp_path / "vocab.txt")
    helpers.write_corpus(corpus, num_documents=100)
    helpers.write_vocab(vocab, num_documents=100)
    output = tmp_path / "records.tfrecord"
    output.write_bytes(b"previous records")
    partial = tmp_path / ".records.tfrecord.partial"
    process = subprocess.Popen(
        _app_command(corpus, vocab, [str(output)], dupe_factor=20),
        env=helpers.app_env(), cwd=helpers.REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and partial.stat().st_size > 0):
            assert process.poll() is None, "the run ended before it was seen writing"
            assert time.monotonic() < deadline
            time.sleep(0.001)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert output.read_bytes() == b"previous records"
    assert pretraining.expand_input_files(str(tmp_path / "*")) == [corpus, str(output), vocab]
    assert _create_unicode_records([str(output)])[0] > 20  # Over the killed run's partial file.
    assert sorted(os.listdir(tmp_path)) == ["corpus.txt", "records.tfrecord", "vocab.txt"]


def _app_command(corpus, vocab, outputs, dupe_factor=3):
    return [
        sys.executable, "-m", "lamb.create_pretraining_data",
        f"--input_file={corpus}", f"--output_file={','.join(outputs)}",
        f"--vocab_file={vocab}", f"--max_seq_length={helpers.SEQ_LENGTH}",
        f"--max_predictions_per_seq={helpers.PREDICTIONS}", f"--dupe_factor={dupe_factor}",
        "--masked_lm_prob=0.15", "--short_seq_prob=0.1", "--random_seed=7", "--num_processes=1",
    ]


def _create_pretraining_data(corpus, vocab, outputs, **env):
    result = subprocess.run(
        _app_command(corpus, vocab, outputs), env=helpers.app_env(**env), cwd=helpers.REPO, capture_output=True, text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    """The app run as a command on the generated corpus: two output files."""
    directory = str(tmp_path_factory.mktemp("cpd"))
    corpus = os.path.join(directory, "corpus.txt")
    vocab = os.path.join(directory, "vocab.txt")
    helpers.write_corpus(corpus)
    helpers.write_vocab(vocab)
    outputs = [os.path.join(directory, f"out-{i}.tfrecord") for i in range(2)]
    _create_pretraining_data(corpus, vocab, outputs, PYTHONHASHSEED="1")
    with open(vocab, encoding="utf-8") as f:
        tokens = [line.strip() for line in f]
    return {"files": outputs, "vocab": tokens, "corpus": corpus, "dir": directory}


def test_output_files_are_the_same_bytes_in_every_process(records, tmp_path):
    """Protobuf writes a record's feature map in an order that varies between
    processes unless serialized deterministically."""
    outputs = [str(tmp_path / f"again-{i}.tfrecord") for i in range(2)]
    _create_pretraining_data(
        records["corpus"], os.path.join(records["dir"], "vocab.txt"), outputs,
        PYTHONHASHSEED="2",
    )
    for first, again in zip(records["files"], outputs):
        with open(first, "rb") as f, open(again, "rb") as g:
            assert f.read() == g.read()


def _examples(files):
    dataset = tf.data.TFRecordDataset(files)
    return [
        {k: v.numpy() for k, v in tf.io.parse_single_example(r, BERT_NAME_TO_FEATURES).items()}
        for r in dataset
    ]


def test_records_have_exactly_berts_features(records):
    for path in records["files"]:
        raw = next(iter(tf.data.TFRecordDataset(path))).numpy()
        example = tf.train.Example.FromString(raw)
        assert set(example.features.feature) == set(BERT_NAME_TO_FEATURES)
    examples = _examples(records["files"])
    assert len(examples) > 100
    counts = [sum(1 for _ in tf.data.TFRecordDataset(p)) for p in records["files"]]
    assert abs(counts[0] - counts[1]) <= 1  # Round-robin over the output files.


def _sentence_ids(tokens):
    """(document, sentence) of each "dD sS" pair in a token list."""
    return [
        (int(a[1:]), int(b[1:]))
        for a, b in zip(tokens, tokens[1:])
        if a.startswith("d") and a[1:].isdigit() and b.startswith("s") and b[1:].isdigit()
    ]


def test_instances_follow_berts_construction(records):
    vocab = records["vocab"]
    ids = {t: i for i, t in enumerate(vocab)}
    replaced = collections.Counter()
    for example in _examples(records["files"]):
        mask = example["input_mask"]
        length = int(mask.sum())
        assert np.all(mask[:length] == 1) and np.all(mask[length:] == 0)
        input_ids = example["input_ids"].copy()
        assert np.all(input_ids[length:] == 0)
        weights = example["masked_lm_weights"]
        count = int(weights.sum())
        assert count == min(helpers.PREDICTIONS, max(1, round(length * 0.15)))
        positions = example["masked_lm_positions"][:count]
        assert np.all(np.diff(positions) > 0) and np.all(positions < length)
        assert np.all(example["masked_lm_positions"][count:] == 0)
        # Put the original tokens back.
        for position, label in zip(positions, example["masked_lm_ids"][:count]):
            if input_ids[position] == ids["[MASK]"]:
                replaced["mask"] += 1
            elif input_ids[position] == label:
                replaced["same"] += 1
            else:
                replaced["random"] += 1
            input_ids[position] = label
        tokens = [vocab[i] for i in input_ids[:length]]
        segments = example["segment_ids"][:length]
        first_sep = tokens.index("[SEP]")
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        assert np.all(segments[: first_sep + 1] == 0) and np.all(segments[first_sep + 1 :] == 1)
        assert "[CLS]" not in [vocab[i] for i in example["masked_lm_ids"][:count]]
        a = _sentence_ids(tokens[1:first_sep])
        b = _sentence_ids(tokens[first_sep + 1 : -1])
        if a and b:
            if example["next_sentence_labels"][0] == 0:  # B follows A in one document.
                assert a[-1][0] == b[0][0] and b[0][1] > a[-1][1]
    total = sum(replaced.values())
    assert 0.7 < replaced["mask"] / total < 0.9
    assert 0.04 < replaced["same"] / total < 0.17
    assert 0.04 < replaced["random"] / total < 0.17


def test_same_seed_same_examples_other_seed_other_masks(records):
    vocab = records["vocab"]
    documents = pretraining.read_documents([records["corpus"]], vocab, do_lower_case=True)

    def serialized(seed):
        instances = pretraining.create_training_instances(
            documents, vocab, helpers.SEQ_LENGTH, 3, 0.1, 0.15, helpers.PREDICTIONS, False,
            random.Random(seed),
        )
        ids = {t: i for i, t in enumerate(vocab)}
        return [
            pretraining.instance_to_example(i, ids, helpers.SEQ_LENGTH, helpers.PREDICTIONS)
            for i in instances
        ]

    written = [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(records["files"][0])
    ]
    again = serialized(7)
    assert written == again[0::2]
    assert serialized(8) != again


def test_whole_word_masking_masks_all_pieces_of_a_word():
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "un", "##want", "##ed", "runn", "##ing"]
    tokens = ["[CLS]", "un", "##want", "##ed", "runn", "##ing", "[SEP]", "runn", "##ing", "[SEP]"]
    for seed in range(20):
        _, positions, _ = pretraining.create_masked_lm_predictions(
            tokens, 0.5, 5, True, vocab, random.Random(seed)
        )
        words = [[1, 2, 3], [4, 5], [7, 8]]
        for word in words:
            assert all(p in positions for p in word) or not any(p in positions for p in word)


def _bert_truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """google-research/bert's `truncate_seq_pair`: one token deleted per random number."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc_tokens = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc_tokens[0]
        else:
            trunc_tokens.pop()


class _DeletionCountingList(list):
    """A list that counts the `del` and `pop` calls made on it."""

    def __init__(self, items):
        super().__init__(items)
        self.deletions = 0

    def __delitem__(self, key):
        self.deletions += 1
        super().__delitem__(key)

    def pop(self, *args):
        self.deletions += 1
        return super().pop(*args)


def test_truncation_keeps_berts_tokens_and_random_stream_and_deletes_in_slices():
    cases = random.Random(0)
    for _ in range(2000):
        max_num_tokens = cases.randint(2, 60)
        tokens_a = list(range(cases.randint(0, 80)))
        tokens_b = list(range(100, 100 + cases.randint(0, 80)))
        seed = cases.random()
        expected_a, expected_b, bert_rng = list(tokens_a), list(tokens_b), random.Random(seed)
        _bert_truncate_seq_pair(expected_a, expected_b, max_num_tokens, bert_rng)
        rng = random.Random(seed)
        pretraining.truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
        assert (tokens_a, tokens_b) == (expected_a, expected_b)
        assert rng.getstate() == bert_rng.getstate()
    # A long line: deleting its tokens one at a time from the front is quadratic.
    long_line, other_line = range(20_000), range(20_000, 20_100)
    expected_a, expected_b = list(long_line), list(other_line)
    _bert_truncate_seq_pair(expected_a, expected_b, 125, random.Random(1))
    tokens_a, tokens_b = _DeletionCountingList(long_line), _DeletionCountingList(other_line)
    pretraining.truncate_seq_pair(tokens_a, tokens_b, 125, random.Random(1))
    assert (tokens_a, tokens_b) == (expected_a, expected_b)
    assert tokens_a.deletions <= 2 and tokens_b.deletions <= 2


def test_records_written_as_berts_writer_does_are_read(tmp_path):
    """A record built field by field as BERT's `write_instance_to_example_files` builds it."""
    seq, preds = helpers.SEQ_LENGTH, helpers.PREDICTIONS
    features = collections.OrderedDict()
    features["input_ids"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[2, 7, 4, 3, 8, 3] + [0] * (seq - 6))
    )
    features["input_mask"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[1] * 6 + [0] * (seq - 6))
    )
    features["segment_ids"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[0, 0, 0, 0, 1, 1] + [0] * (seq - 6))
    )
    features["masked_lm_positions"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[2] + [0] * (preds - 1))
    )
    features["masked_lm_ids"] = tf.train.Feature(
        int64_list=tf.train.Int64List(value=[9] + [0] * (preds - 1))
    )
    features["masked_lm_weights"] = tf.train.Feature(
        float_list=tf.train.FloatList(value=[1.0] + [0.0] * (preds - 1))
    )
    features["next_sentence_labels"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))
    path = str(tmp_path / "bert.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        example = tf.train.Example(features=tf.train.Features(feature=features))
        writer.write(example.SerializeToString())
    assert pretraining.check_input_files([path], seq, preds, read_all_records=True) == 1
    inputs, labels = next(iter(pretraining.make_dataset([path], 1, seq, preds, seed=0)))
    assert inputs["input_ids"].dtype == tf.int32 and inputs["input_ids"].shape == (1, seq)
    assert inputs["masked_lm_positions"].numpy()[0, 0] == 2
    assert labels["masked_lm_ids"].numpy()[0, 0] == 9
    assert labels["next_sentence_labels"].numpy().tolist() == [1]


def test_a_vocabulary_without_berts_special_tokens_is_named(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[PAD]\nhello\n")
    with pytest.raises(ValueError, match=r"^--vocab_file: .*vocab\.txt lacks the special tokens"):
        pretraining.load_vocab(str(vocab))


def test_shakespeare_with_berts_vocabulary(tmp_path):
    text = os.path.join(helpers.SHARED_DATA, "text", "shakespeare", "sonnets_gut.txt")
    vocab_file = os.path.join(helpers.SHARED_DATA, "bert", "vocab_uncased.txt")
    if not (os.path.exists(text) and os.path.exists(vocab_file)):
        pytest.skip(f"shared data not found at {helpers.SHARED_DATA}")
    vocab = pretraining.load_vocab(vocab_file)
    assert len(vocab) == 30522
    documents = pretraining.read_documents([text], vocab, do_lower_case=True, num_processes=2)
    assert ["from", "fair", "##est", "creatures", "we", "desire", "increase", ","] in documents[2]
