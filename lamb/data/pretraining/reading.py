"""Reading text as BERT's tool reads it, tokenized in parallel.

The input is read as TensorFlow's `readline` (BERT's reader) returns it and
tokenized by BERT's rules (`lamb.data.bert_tokenizer`) in a process pool
over pieces of whole lines; the documents do not depend on the number of
processes.
"""

import collections
import gc
import multiprocessing
import os

from absl import logging
import numpy as np
import tensorflow as tf

from lamb import _checks
from lamb.data.bert_tokenizer import UNK, BertTokenizer
from lamb.data.pretraining.output_files import is_partial_file
from lamb.data.pretraining.progress import Progress

SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
CHUNK_BYTES = 1 << 20  # Input read and tokenized in pieces of whole lines of about this size.
# Above this share of [UNK] tokens a warning is logged: BERT's uncased vocabulary
# leaves none in English text (0 of 24,073 tokens of Shakespeare's sonnets).
MAX_UNKNOWN_FRACTION = 0.1


def _check_regular_file(flag, path):
    """ValueError naming `flag` unless the local `path` is a regular file
    (a folder, or a device or pipe that is read twice or never ends)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag}: {path} is a folder, not a file.")
    if not os.path.isfile(path):
        raise ValueError(f"{flag}: {path} is not a regular file (a device or pipe); give a file.")


def load_vocab(vocab_file):
    """The vocabulary as a list of tokens in file order (the id is the index),
    each line read as BERT reads it (without "\r", stripped)."""
    if not tf.io.gfile.exists(vocab_file):
        raise FileNotFoundError(f"--vocab_file: {vocab_file} does not exist.")
    if "://" not in vocab_file:
        _check_regular_file("--vocab_file", vocab_file)
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


def expand_input_files(input_file):
    """Files matching the comma-separated globs of `--input_file`, sorted per
    glob, without the unfinished outputs (`.NAME.partial`) that a glob, not
    a name, matches; ValueError naming a local folder, device or pipe among
    them."""
    files = []
    for pattern in input_file.split(","):
        matches = sorted(tf.io.gfile.glob(pattern))
        unfinished = [match for match in matches if match != pattern and is_partial_file(match)]
        if unfinished:
            logging.warning(
                "--input_file: %r also matches %s, left out: what a killed or running "
                "create_pretraining_data was writing.", pattern, ", ".join(unfinished),
            )
            matches = [match for match in matches if match not in unfinished]
        if not matches:
            raise FileNotFoundError(f"--input_file: {pattern!r} matches no file.")
        for match in matches:
            if "://" not in match:  # Local: no request per file.
                _check_regular_file("--input_file", match)
        files.extend(matches)
    return files


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
    are checked to be UTF-8 first (`check_utf8`). A warning is logged when
    more than `MAX_UNKNOWN_FRACTION` of the tokens are [UNK]. Tokenization
    runs in `num_processes` processes of one thread each; the documents do
    not depend on it.
    """
    _checks.check_int("--num_processes", num_processes, low=1)
    total = check_utf8(input_files, chunk_bytes)
    num_processes = min(num_processes, max(1, -(-total // chunk_bytes)))
    plural = "es" if num_processes > 1 else ""
    progress = Progress(f"Tokenized ({num_processes} process{plural})", total, " MB", 1e6)
    tokens_of = np.array(vocab, dtype=object)
    unknown_ids = np.flatnonzero(tokens_of == UNK)
    chunks = (chunk for path in input_files for _, chunk in read_chunks(path, chunk_bytes))
    documents = [[]]
    num_tokens = num_unknown = 0
    for size, (line_lengths, ids) in _tokenized_chunks(
        chunks, vocab, do_lower_case, num_processes
    ):
        num_tokens += ids.size
        num_unknown += int(np.isin(ids, unknown_ids).sum())
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
    if num_unknown > MAX_UNKNOWN_FRACTION * num_tokens:
        logging.warning(
            "%.0f%% of the %d tokens of --input_file are %s (words --vocab_file cannot spell): "
            "does the vocabulary fit the text and --do_lower_case?",
            100 * num_unknown / num_tokens, num_tokens, UNK,
        )
    return [document for document in documents if document]
