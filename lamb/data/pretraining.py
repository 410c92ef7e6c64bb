"""BERT pre-training TFRecords: writing them as BERT does, checking and reading them.

Writing follows google-research/bert's `create_pretraining_data.py` step for
step: the input read as BERT reads it, BERT's tokenization
(`lamb.data.bert_tokenizer`) and the same random stream, so the same records
for the same input files, seed and flags. Only the tokenization runs in
parallel (a process pool over pieces of the input; the random stream comes
after it). The records hold seven fixed-length features, parsed with the
same `FixedLenFeature` spec as BERT's `run_pretraining.py`: files written
here and by BERT's tool are interchangeable.
"""

import collections
import contextlib
import gc
import multiprocessing
import os
import random
import time

from absl import logging
from google.protobuf.message import DecodeError
import numpy as np
import tensorflow as tf

from lamb import _checks
from lamb.data.bert_tokenizer import BertTokenizer

# Writing.

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
CHUNK_BYTES = 1 << 20  # Input read and tokenized in pieces of whole lines of about this size.

TrainingInstance = collections.namedtuple(
    "TrainingInstance",
    ["tokens", "segment_ids", "masked_lm_positions", "masked_lm_labels", "is_random_next"],
)
MaskedLmInstance = collections.namedtuple("MaskedLmInstance", ["index", "label"])


class Progress:
    """Logs how far a long step is: done of total, the rate and the time left,
    at most every `interval` seconds, and a last line from `finish`."""

    def __init__(self, what, total, unit="", scale=1, interval=10.0):
        self.what, self.total, self.unit, self.scale = what, total, unit, scale
        self.interval = interval
        self.done = 0
        self.start = self.last = time.monotonic()

    def _amount(self, count):
        return f"{count / self.scale:,.1f}{self.unit}" if self.scale != 1 else f"{count:,.0f}{self.unit}"

    def add(self, count):
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.start)
            logging.info(
                "%s: %s of %s (%s/s), about %.0f s left", self.what, self._amount(self.done),
                self._amount(self.total), self._amount(rate), (self.total - self.done) / rate,
            )

    def finish(self):
        seconds = max(time.monotonic() - self.start, 1e-9)
        logging.info(
            "%s: %s in %.1f s (%s/s)", self.what, self._amount(self.done), seconds,
            self._amount(self.done / seconds),
        )


def load_vocab(vocab_file):
    """The vocabulary as a list of tokens in file order (the id is the index),
    each line read as BERT reads it (without "\r", stripped)."""
    if not tf.io.gfile.exists(vocab_file):
        raise FileNotFoundError(f"--vocab_file: {vocab_file} does not exist.")
    if tf.io.gfile.isdir(vocab_file):
        raise ValueError(f"--vocab_file: {vocab_file} is a folder; give the vocabulary's file.")
    check_utf8([vocab_file], flag="--vocab_file")
    with tf.io.gfile.GFile(vocab_file, "rb") as reader:
        data = _as_bert_reads(reader.read())
    vocab = [line.strip() for line in data.decode("utf-8").split("\n")]
    if data.endswith(b"\n"):
        vocab.pop()  # No line after the last newline.
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ValueError(
            f"--vocab_file: {vocab_file} lacks the special tokens {missing}; "
            f"a BERT WordPiece vocabulary holds {list(SPECIAL_TOKENS)}."
        )
    return vocab


def warn_if_case_mismatch(vocab, do_lower_case):
    """Logs a warning (naming --do_lower_case) when the vocabulary's case
    does not fit it: tokens with upper-case letters that lower-cased text
    never matches, or no such token at all for text kept as it is."""
    cased = [token for token in vocab if token != token.lower() and not (
        token.startswith("[") and token.endswith("]"))]
    if do_lower_case and cased:
        logging.warning(
            "--do_lower_case=true, but %d tokens of the vocabulary have upper-case letters "
            "(%s, ...), which lower-cased text never matches: a cased vocabulary needs "
            "--do_lower_case=false.", len(cased), ", ".join(cased[:3]),
        )
    elif not do_lower_case and not cased:
        logging.warning(
            "--do_lower_case=false, but no token of the vocabulary has an upper-case letter: "
            "every capitalized word becomes [UNK] or other pieces. An uncased vocabulary "
            "needs --do_lower_case=true."
        )


def vocab_words(vocab):
    """The tokens that masking draws random replacements from: as BERT's
    `tokenizer.vocab.keys()`, each token once, in order of first appearance."""
    return list(dict.fromkeys(vocab))


def read_chunks(path, chunk_bytes=CHUNK_BYTES):
    """(byte offset, bytes) pieces of the file `path`, each of whole lines (a
    line ends at "\n", as for BERT's `readline`; the last may lack it)."""
    offset, parts = 0, []  # parts: what was read since the last "\n".
    with tf.io.gfile.GFile(path, "rb") as reader:
        while True:
            block = reader.read(chunk_bytes)
            if not block:
                if parts:
                    yield offset, b"".join(parts)
                return
            end = block.rfind(b"\n") + 1
            if not end:
                parts.append(block)
                continue
            piece = b"".join([*parts, block[:end]])
            yield offset, piece
            offset += len(piece)
            parts = [block[end:]] if end < len(block) else []


def _as_bert_reads(chunk):
    """`chunk` as TensorFlow's `readline` (BERT's reader) returns it: with
    every "\r" byte dropped, within lines too."""
    return chunk.replace(b"\r", b"")


def check_utf8(input_files, chunk_bytes=CHUNK_BYTES, flag="--input_file"):
    """The total size in bytes of `input_files`; ValueError naming the flag,
    the file, the byte offset and the line of the first bytes that are not
    UTF-8."""
    total = 0
    for path in input_files:
        lines = 0
        for offset, chunk in read_chunks(path, chunk_bytes):
            try:
                _as_bert_reads(chunk).decode("utf-8")
            except UnicodeDecodeError as error:
                # The error's position counted with the dropped "\r"s.
                start = int(np.flatnonzero(np.frombuffer(chunk, np.uint8) != ord("\r"))[error.start])
                line = lines + chunk.count(b"\n", 0, start) + 1
                raise ValueError(
                    f"{flag}: {path} is not UTF-8 text: byte offset {offset + start} "
                    f"(line {line}): {error.object[error.start:error.end]!r}, {error.reason}."
                ) from None
            lines += chunk.count(b"\n")
            total += len(chunk)
    return total


def tokenize_chunk(chunk, tokenizer):
    """(lengths, ids) of the lines of `chunk` (bytes of whole lines) read as
    BERT reads them (without "\r", UTF-8, stripped of whitespace): each
    line's number of WordPiece ids, -1 for a blank line, and all the ids."""
    chunk = _as_bert_reads(chunk)
    lines = chunk.decode("utf-8").split("\n")
    if chunk.endswith(b"\n"):
        lines.pop()
    lines = [line.strip() for line in lines]
    lengths, ids = tokenizer.tokenize_ids([line for line in lines if line])
    line_lengths = np.full(len(lines), -1, dtype=np.int64)
    line_lengths[np.array([bool(line) for line in lines], dtype=bool)] = lengths
    return line_lengths, ids


_worker_tokenizer = None


def _start_worker(vocab, do_lower_case):
    global _worker_tokenizer
    _worker_tokenizer = BertTokenizer(vocab, do_lower_case)


def _tokenize_in_worker(chunk):
    return tokenize_chunk(chunk, _worker_tokenizer)


def _tokenized_chunks(chunks, vocab, do_lower_case, num_processes):
    """(size, tokenize_chunk result) of each chunk, in order, tokenized in
    `num_processes` processes (1: in this one) of one thread each (sets
    TOKENIZERS_PARALLELISM=false, inherited by the workers)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = BertTokenizer(vocab, do_lower_case)  # Its character classes: forked workers share them.
    if num_processes == 1:
        for chunk in chunks:
            yield len(chunk), tokenize_chunk(chunk, tokenizer)
        return
    # Forked workers start at once; spawned ones would import TensorFlow anew.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    gc.freeze()  # The workers' garbage collector leaves the inherited objects alone.
    try:
        pool = context.Pool(num_processes, _start_worker, (vocab, do_lower_case))
    finally:
        gc.unfreeze()
    with pool:
        pending = collections.deque()  # At most 2 chunks per process in flight.
        for chunk in chunks:
            pending.append((len(chunk), pool.apply_async(_tokenize_in_worker, (chunk,))))
            if len(pending) >= 2 * num_processes:
                size, result = pending.popleft()
                yield size, result.get()
        while pending:
            size, result = pending.popleft()
            yield size, result.get()


def read_documents(input_files, vocab, do_lower_case, num_processes=1, chunk_bytes=CHUNK_BYTES):
    """Documents (lists of tokenized lines) as BERT's tool reads `input_files`.

    A blank line ends a document (also across files, as in BERT); a line
    without tokens is dropped; empty documents are left out. All the files
    are checked to be UTF-8 first (`check_utf8`). Tokenization runs in
    `num_processes` processes of one thread each; the documents do not
    depend on it.
    """
    _checks.check_int("--num_processes", num_processes, low=1)
    total = check_utf8(input_files, chunk_bytes)
    num_processes = min(num_processes, max(1, -(-total // chunk_bytes)))
    plural = "es" if num_processes > 1 else ""
    progress = Progress(f"Tokenized ({num_processes} process{plural})", total, " MB", 1e6)
    tokens_of = np.array(vocab, dtype=object)
    chunks = (chunk for path in input_files for _, chunk in read_chunks(path, chunk_bytes))
    documents = [[]]
    for size, (line_lengths, ids) in _tokenized_chunks(
        chunks, vocab, do_lower_case, num_processes
    ):
        tokens = tokens_of[ids].tolist()
        start = 0
        for length in line_lengths.tolist():
            if length < 0:
                documents.append([])
            elif length:
                documents[-1].append(tokens[start : start + length])
                start += length
        progress.add(size)
    progress.finish()
    return [document for document in documents if document]


PARTIAL_SUFFIX = ".partial"


def _partial_path(path):
    """The temporary name beside `path` that its records are written to."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{PARTIAL_SUFFIX}")


def check_output_files(output_files, read_files):
    """The outputs' final paths (symbolic links followed); ValueError naming
    --output_file unless each is a new or regular file, given once, in a
    folder (created here), and none of the files that `read_files` (flag ->
    paths) names, under any name or link."""
    read_by = {}  # (device, inode) -> flag: links of every kind lead to one key.
    for flag, paths in read_files.items():
        for path in paths:
            if "://" not in path:
                stat = os.stat(path)
                read_by.setdefault((stat.st_dev, stat.st_ino), flag)
    finals = []
    for path in output_files:
        if not path:
            raise ValueError("--output_file: an empty name in the comma-separated list.")
        if "://" in path:  # Object stores (gs://, ...): no links, folders or locks to check.
            finals.append(path)
            continue
        final = os.path.realpath(path)
        stat = os.stat(final) if os.path.exists(final) else None
        if stat and (stat.st_dev, stat.st_ino) in read_by:
            raise ValueError(
                f"--output_file: {path} is also read as "
                f"{read_by[(stat.st_dev, stat.st_ino)]}; writing it would destroy it. Give "
                "another --output_file."
            )
        if final in finals:
            raise ValueError(f"--output_file: {path} is given more than once; give each file once.")
        if os.path.isdir(final):
            raise ValueError(f"--output_file: {path} is a folder; give a file name.")
        if os.path.exists(final) and not os.path.isfile(final):
            raise ValueError(
                f"--output_file: {path} is not a regular file (a device or pipe); give a file name."
            )
        folder = os.path.dirname(final)
        parent = folder
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise ValueError(
                f"--output_file: {path} cannot be written: {parent} is a file, not a folder."
            )
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as error:
            raise ValueError(
                f"--output_file: cannot create the folder of {path}: {error.strerror}."
            ) from None
        finals.append(final)
    return finals


def _lock_partial(final):
    """The temporary file of `final`, created, locked (`fcntl.flock`) and
    emptied; RuntimeError naming --output_file if another run holds it."""
    partial = _partial_path(final)
    while True:
        try:
            file = open(partial, "ab")
        except OSError as error:
            raise ValueError(f"--output_file: {final} cannot be written: {error.strerror}.") from None
        try:
            import fcntl  # POSIX only: on Windows, the ImportError below.

            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise RuntimeError(
                f"--output_file: {final} is being written by another run (which holds "
                f"{partial}); wait for it to end or give another --output_file."
            ) from None
        except (OSError, ImportError) as error:  # No locks: some NFS or FUSE mounts, Windows.
            logging.warning(
                "--output_file=%s cannot be locked (%s): make sure no other run writes it.",
                final, error,
            )
        try:
            if os.stat(partial).st_ino == os.fstat(file.fileno()).st_ino:
                file.truncate(0)
                return file
        except FileNotFoundError:
            pass
        file.close()  # The run that held it renamed it meanwhile: lock the new one.


@contextlib.contextmanager
def written_whole(output_files, read_files):
    """Temporary paths to write `output_files` to, renamed onto them after
    the block: a run killed at any moment leaves each output as it was, or
    complete. The outputs are checked first (`check_output_files`) and locked
    for the block, so that two runs cannot write one file."""
    finals = check_output_files(output_files, read_files)
    with contextlib.ExitStack() as stack:
        partials = []
        for final in finals:
            if "://" in final:
                partials.append(_partial_path(final))
                continue
            file = stack.enter_context(_lock_partial(final))
            partials.append(file.name)
        try:
            yield partials
        except BaseException:
            for partial in partials:
                if tf.io.gfile.exists(partial):
                    tf.io.gfile.remove(partial)
            raise
        for partial, final in zip(partials, finals):
            if "://" in final:
                tf.io.gfile.rename(partial, final, overwrite=True)
                continue
            with open(partial, "rb") as file:
                os.fsync(file.fileno())  # The records on disk before the rename.
            os.replace(partial, final)


def create_pretraining_files(
    input_files,
    output_files,
    vocab,
    do_lower_case,
    do_whole_word_mask,
    max_seq_length,
    max_predictions_per_seq,
    dupe_factor,
    masked_lm_prob,
    short_seq_prob,
    random_seed,
    num_processes=1,
    chunk_bytes=CHUNK_BYTES,
    vocab_file=None,
):
    """BERT's `create_pretraining_data.py` on `input_files` (in this order):
    the records written round-robin to `output_files`, each renamed into
    place when complete (`written_whole`; `vocab_file`, if given, is refused
    as an output too). Returns the number of records and of documents."""
    read_files = {"--input_file": input_files}
    if vocab_file is not None:
        read_files["--vocab_file"] = [vocab_file]
    with written_whole(output_files, read_files) as partial_files:
        warn_if_case_mismatch(vocab, do_lower_case)
        documents = read_documents(input_files, vocab, do_lower_case, num_processes, chunk_bytes)
        if not documents:
            raise ValueError(
                f"--input_file: {', '.join(input_files)} "
                f"{'holds' if len(input_files) == 1 else 'hold'} no line with a token."
            )
        instances = create_training_instances(
            documents,
            vocab_words(vocab),
            max_seq_length,
            dupe_factor,
            short_seq_prob,
            masked_lm_prob,
            max_predictions_per_seq,
            do_whole_word_mask,
            random.Random(random_seed),
        )
        count = write_instance_to_example_files(
            instances, vocab, max_seq_length, max_predictions_per_seq, partial_files
        )
    return count, len(documents)


def create_training_instances(
    all_documents,
    vocab_words,
    max_seq_length,
    dupe_factor,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    do_whole_word_mask,
    rng,
):
    """`TrainingInstance`s from tokenized documents (shuffled, as BERT's)."""
    all_documents = list(all_documents)
    rng.shuffle(all_documents)
    instances = []
    progress = Progress("Documents made into instances", dupe_factor * len(all_documents))
    for _ in range(dupe_factor):
        for document_index in range(len(all_documents)):
            progress.add(1)
            instances.extend(
                create_instances_from_document(
                    all_documents,
                    document_index,
                    max_seq_length,
                    short_seq_prob,
                    masked_lm_prob,
                    max_predictions_per_seq,
                    do_whole_word_mask,
                    vocab_words,
                    rng,
                )
            )
    progress.finish()
    rng.shuffle(instances)
    return instances


def create_instances_from_document(
    all_documents,
    document_index,
    max_seq_length,
    short_seq_prob,
    masked_lm_prob,
    max_predictions_per_seq,
    do_whole_word_mask,
    vocab_words,
    rng,
):
    """Sentence pairs "A [SEP] B" of one document; B is random half of the time."""
    document = all_documents[document_index]
    max_num_tokens = max_seq_length - 3  # [CLS], [SEP], [SEP]
    target_seq_length = max_num_tokens
    if rng.random() < short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)

    instances = []
    current_chunk = []
    current_length = 0
    i = 0
    while i < len(document):
        segment = document[i]
        current_chunk.append(segment)
        current_length += len(segment)
        if i == len(document) - 1 or current_length >= target_seq_length:
            if current_chunk:
                a_end = 1
                if len(current_chunk) >= 2:
                    a_end = rng.randint(1, len(current_chunk) - 1)
                tokens_a = []
                for j in range(a_end):
                    tokens_a.extend(current_chunk[j])

                tokens_b = []
                if len(current_chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    target_b_length = target_seq_length - len(tokens_a)
                    for _ in range(10):
                        random_document_index = rng.randint(0, len(all_documents) - 1)
                        if random_document_index != document_index:
                            break
                    random_document = all_documents[random_document_index]
                    random_start = rng.randint(0, len(random_document) - 1)
                    for j in range(random_start, len(random_document)):
                        tokens_b.extend(random_document[j])
                        if len(tokens_b) >= target_b_length:
                            break
                    # The unused segments go back to the document.
                    i -= len(current_chunk) - a_end
                else:
                    is_random_next = False
                    for j in range(a_end, len(current_chunk)):
                        tokens_b.extend(current_chunk[j])
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)

                tokens = ["[CLS]", *tokens_a, "[SEP]", *tokens_b, "[SEP]"]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                tokens, masked_lm_positions, masked_lm_labels = create_masked_lm_predictions(
                    tokens,
                    masked_lm_prob,
                    max_predictions_per_seq,
                    do_whole_word_mask,
                    vocab_words,
                    rng,
                )
                instances.append(
                    TrainingInstance(
                        tokens=tokens,
                        segment_ids=segment_ids,
                        masked_lm_positions=masked_lm_positions,
                        masked_lm_labels=masked_lm_labels,
                        is_random_next=is_random_next,
                    )
                )
            current_chunk = []
            current_length = 0
        i += 1
    return instances


def create_masked_lm_predictions(
    tokens, masked_lm_prob, max_predictions_per_seq, do_whole_word_mask, vocab_words, rng
):
    """Masks 15% of the tokens: 80% [MASK], 10% random token, 10% unchanged."""
    cand_indexes = []
    for i, token in enumerate(tokens):
        if token in ("[CLS]", "[SEP]"):
            continue
        if do_whole_word_mask and cand_indexes and token.startswith("##"):
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)

    output_tokens = list(tokens)
    num_to_predict = min(
        max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob)))
    )
    masked_lms = []
    covered_indexes = set()
    for index_set in cand_indexes:
        if len(masked_lms) >= num_to_predict:
            break
        if len(masked_lms) + len(index_set) > num_to_predict:
            continue
        if any(index in covered_indexes for index in index_set):
            continue
        for index in index_set:
            covered_indexes.add(index)
            if rng.random() < 0.8:
                masked_token = "[MASK]"
            elif rng.random() < 0.5:
                masked_token = tokens[index]
            else:
                masked_token = vocab_words[rng.randint(0, len(vocab_words) - 1)]
            output_tokens[index] = masked_token
            masked_lms.append(MaskedLmInstance(index=index, label=tokens[index]))
    masked_lms.sort(key=lambda x: x.index)
    return (
        output_tokens,
        [p.index for p in masked_lms],
        [p.label for p in masked_lms],
    )


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Truncates the longer sequence, from the front or the back at random.

    Draws BERT's random number per removed token but counts the removals
    first and deletes them in two slices per sequence: deleting a list's
    first token one at a time takes time quadratic in a long line's length.
    """
    length_a, length_b = len(tokens_a), len(tokens_b)
    front_a = front_b = 0  # Tokens to remove from each sequence's front.
    while length_a + length_b > max_num_tokens:
        from_front = rng.random() < 0.5
        if length_a > length_b:
            length_a -= 1
            front_a += from_front
        else:
            length_b -= 1
            front_b += from_front
    for tokens, front, length in ((tokens_a, front_a, length_a), (tokens_b, front_b, length_b)):
        del tokens[front + length :]
        del tokens[:front]


def _int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def instance_to_example(instance, token_ids, max_seq_length, max_predictions_per_seq):
    """A `tf.train.Example` with BERT's features, zero-padded to fixed lengths."""
    input_ids = [token_ids[token] for token in instance.tokens]
    if len(input_ids) > max_seq_length:
        raise ValueError(f"An instance has {len(input_ids)} > {max_seq_length} tokens.")
    pad = max_seq_length - len(input_ids)
    input_mask = [1] * len(input_ids) + [0] * pad
    segment_ids = list(instance.segment_ids) + [0] * pad
    input_ids = input_ids + [0] * pad

    num_predictions = len(instance.masked_lm_positions)
    pad = max_predictions_per_seq - num_predictions
    masked_lm_positions = list(instance.masked_lm_positions) + [0] * pad
    masked_lm_ids = [token_ids[token] for token in instance.masked_lm_labels] + [0] * pad
    masked_lm_weights = [1.0] * num_predictions + [0.0] * pad

    features = collections.OrderedDict()
    features["input_ids"] = _int_feature(input_ids)
    features["input_mask"] = _int_feature(input_mask)
    features["segment_ids"] = _int_feature(segment_ids)
    features["masked_lm_positions"] = _int_feature(masked_lm_positions)
    features["masked_lm_ids"] = _int_feature(masked_lm_ids)
    features["masked_lm_weights"] = _float_feature(masked_lm_weights)
    features["next_sentence_labels"] = _int_feature([1 if instance.is_random_next else 0])
    return tf.train.Example(features=tf.train.Features(feature=features))


def write_instance_to_example_files(
    instances, vocab, max_seq_length, max_predictions_per_seq, output_files
):
    """Writes the instances round-robin to the output files; returns the count."""
    token_ids = {token: i for i, token in enumerate(vocab)}
    writers = [tf.io.TFRecordWriter(output_file) for output_file in output_files]
    progress = Progress("Written", len(instances), " instances")
    for index, instance in enumerate(instances):
        example = instance_to_example(
            instance, token_ids, max_seq_length, max_predictions_per_seq
        )
        writers[index % len(writers)].write(example.SerializeToString(deterministic=True))
        if index < 3:
            logging.info("tokens: %s", " ".join(instance.tokens))
        progress.add(1)
    for writer in writers:
        writer.close()
    progress.finish()
    return len(instances)


# Reading.

INPUT_FEATURES = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions")
LABEL_FEATURES = ("masked_lm_ids", "masked_lm_weights", "next_sentence_labels")


def feature_spec(max_seq_length, max_predictions_per_seq):
    """BERT's `name_to_features`: name -> (dtype, length)."""
    return {
        "input_ids": (tf.int64, max_seq_length),
        "input_mask": (tf.int64, max_seq_length),
        "segment_ids": (tf.int64, max_seq_length),
        "masked_lm_positions": (tf.int64, max_predictions_per_seq),
        "masked_lm_ids": (tf.int64, max_predictions_per_seq),
        "masked_lm_weights": (tf.float32, max_predictions_per_seq),
        "next_sentence_labels": (tf.int64, 1),
    }


def expand_input_files(input_file):
    """Files matching the comma-separated globs of `--input_file`, sorted per
    glob; ValueError naming a local folder among them."""
    files = []
    for pattern in input_file.split(","):
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"--input_file: {pattern!r} matches no file.")
        for match in matches:
            if "://" not in match and os.path.isdir(match):  # Local: no request per file.
                raise ValueError(
                    f"--input_file: {match} is a folder; give its files (e.g. "
                    f"{os.path.join(match, '*')})."
                )
        files.extend(matches)
    return files


def _length_flag(name):
    if name in ("input_ids", "input_mask", "segment_ids"):
        return "--max_seq_length"
    if name == "next_sentence_labels":
        return "the format (one label per example)"
    return "--max_predictions_per_seq"


def check_example(example, where, max_seq_length, max_predictions_per_seq):
    """Raises ValueError naming `where` (file and record) and the feature if
    `example` lacks a feature or has the wrong type or length."""
    features = example.features.feature
    for name, (dtype, length) in feature_spec(max_seq_length, max_predictions_per_seq).items():
        if name not in features:
            raise ValueError(f"{where}: no feature {name!r}.")
        kind = "float_list" if dtype == tf.float32 else "int64_list"
        if features[name].WhichOneof("kind") != kind:
            raise ValueError(
                f"{where}: feature {name!r} is a {features[name].WhichOneof('kind')}, "
                f"BERT's format has an {kind}."
            )
        values = len(getattr(features[name], kind).value)
        if values != length:
            raise ValueError(
                f"{where}: feature {name!r} has {values} values per example but "
                f"{_length_flag(name)} asks for {length}."
            )


CHECK_BATCH_RECORDS = 1024  # Records parsed and checked at a time.


def _integer_ranges(max_seq_length, vocab_size, type_vocab_size, config_name):
    """(feature, end, what is allowed) for the integer features, whose values
    must lie in [0, end); the vocabulary bounds only where given."""
    ranges = []
    if vocab_size is not None:
        allowed = f"0 to {vocab_size - 1} (vocab_size={vocab_size} of {config_name})"
        ranges += [("input_ids", vocab_size, allowed), ("masked_lm_ids", vocab_size, allowed)]
    if type_vocab_size is not None:
        allowed = f"0 to {type_vocab_size - 1} (type_vocab_size={type_vocab_size} of {config_name})"
        ranges.append(("segment_ids", type_vocab_size, allowed))
    return ranges + [
        ("masked_lm_positions", max_seq_length,
         f"0 to {max_seq_length - 1} (positions within --max_seq_length={max_seq_length})"),
        ("input_mask", 2, "0 or 1"),
        ("next_sentence_labels", 2, "0 (B follows A) or 1 (B is random)"),
    ]


def check_values(batch, path, first_record, integer_ranges):
    """Raises ValueError naming `path`, the record and the feature at the first
    value of the parsed `batch` (NumPy arrays of records `first_record`, ...)
    that is out of range; masked_lm_weights must be finite and in [0, 1]."""
    problems = []
    for name, end, allowed in integer_ranges:
        values = batch[name]
        problems.append((name, values, (values < 0) | (values >= end), allowed))
    weights = batch["masked_lm_weights"]
    problems.append(
        ("masked_lm_weights", weights, ~((weights >= 0) & (weights <= 1)), "finite numbers in [0, 1]")
    )
    first_bad = None
    for name, values, bad, allowed in problems:
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size and (first_bad is None or rows[0] < first_bad[0]):
            row = rows[0]
            first_bad = (row, name, values[row][bad[row]][0], allowed)
    if first_bad is not None:
        row, name, value, allowed = first_bad
        raise ValueError(
            f"{path}, record {first_record + row} (counting from 0): {name} holds {value}; "
            f"allowed: {allowed}."
        )


def _raise_for_unparsable_record(path, first_record, count, max_seq_length, max_predictions_per_seq):
    """Finds the record among `count` from `first_record` that `parse_example`
    rejected and raises ValueError naming it."""
    records = tf.data.TFRecordDataset(path).skip(first_record).take(count)
    for index, record in enumerate(records, start=first_record):
        where = f"{path}, record {index} (counting from 0)"
        try:
            example = tf.train.Example.FromString(record.numpy())
        except DecodeError as error:
            raise ValueError(f"{where}: not a tf.train.Example ({error}).") from None
        check_example(example, where, max_seq_length, max_predictions_per_seq)


def check_input_files(
    files,
    max_seq_length,
    max_predictions_per_seq,
    read_all_records,
    vocab_size=None,
    type_vocab_size=None,
    config_name="the BERT config",
):
    """Checks each file's first record, or every record if `read_all_records`:
    the TFRecord framing and checksums, the features' types and lengths, and
    the values (token ids in [0, vocab_size), segment ids in [0,
    type_vocab_size), masked-LM positions in [0, max_seq_length), input mask
    and next-sentence labels 0 or 1, masked-LM weights finite in [0, 1]).
    Records are parsed and checked in batches (vectorized).

    Args:
        vocab_size, type_vocab_size: The BERT config's bounds on the token
            and segment ids (`None`: not checked); `config_name` names the
            config in messages.

    Returns:
        The number of records checked.

    Raises:
        FileNotFoundError, ValueError: naming the file, the record and the problem.
    """
    integer_ranges = _integer_ranges(max_seq_length, vocab_size, type_vocab_size, config_name)
    spec = _parse_spec(max_seq_length, max_predictions_per_seq)
    records = 0
    for path in files:
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: no such input file.")
        dataset = tf.data.TFRecordDataset(path)
        if not read_all_records:
            dataset = dataset.take(1)
        batches = dataset.batch(CHECK_BATCH_RECORDS).prefetch(2)
        checked = 0
        iterator = iter(batches)
        while True:
            try:
                serialized = next(iterator)
            except StopIteration:
                break
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
                raise ValueError(
                    f"{path}: corrupt TFRecord file, at or after record {checked} "
                    f"({error.message.splitlines()[0]})."
                ) from None
            try:
                batch = tf.io.parse_example(serialized, spec)
            except tf.errors.InvalidArgumentError:
                _raise_for_unparsable_record(
                    path, checked, len(serialized), max_seq_length, max_predictions_per_seq
                )
                raise
            check_values({name: value.numpy() for name, value in batch.items()}, path, checked,
                         integer_ranges)
            checked += len(serialized)
        if not checked:
            raise ValueError(f"{path}: the file holds no record.")
        records += checked
    return records


def _parse_spec(max_seq_length, max_predictions_per_seq):
    return {
        name: tf.io.FixedLenFeature([length], dtype)
        for name, (dtype, length) in feature_spec(max_seq_length, max_predictions_per_seq).items()
    }


def _parse_batch(serialized, max_seq_length, max_predictions_per_seq):
    example = tf.io.parse_example(serialized, _parse_spec(max_seq_length, max_predictions_per_seq))
    # int64 -> int32 as in BERT (TPUs support only int32).
    example = {
        name: tf.cast(value, tf.int32) if value.dtype == tf.int64 else value
        for name, value in example.items()
    }
    inputs = {name: example[name] for name in INPUT_FEATURES}
    labels = {name: example[name] for name in LABEL_FEATURES}
    labels["next_sentence_labels"] = tf.squeeze(labels["next_sentence_labels"], axis=-1)
    return inputs, labels


def make_dataset(files, batch_size, max_seq_length, max_predictions_per_seq, seed, skip_batches=0):
    """An endless dataset of `(inputs, labels)` batches in a fixed order.

    The file order, the interleaving and the shuffle buffer (BERT's: 100
    records) are seeded, so the `n`-th batch is the same in every run with the
    same files and `seed`: a resumed run skips the `skip_batches` it has
    already trained on and sees exactly what an uninterrupted run would.
    Under a multi-worker strategy each worker reads every file and keeps its
    share of each batch (auto-shard policy DATA).
    """
    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(files))
    dataset = dataset.repeat().shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(4, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.shuffle(100, seed=seed, reshuffle_each_iteration=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.skip(skip_batches)
    dataset = dataset.map(
        lambda serialized: _parse_batch(serialized, max_seq_length, max_predictions_per_seq),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
