"""Training instances from documents, as BERT's tool makes them: sentence
pairs "A [SEP] B" (B random half of the time), truncated and masked, with
BERT's random stream."""

import collections

from lamb.data.pretraining.progress import Progress

TrainingInstance = collections.namedtuple(
    "TrainingInstance",
    ["tokens", "segment_ids", "masked_lm_positions", "masked_lm_labels", "is_random_next"],
)
MaskedLmInstance = collections.namedtuple("MaskedLmInstance", ["index", "label"])


def vocab_words(vocab):
    """The tokens that masking draws random replacements from: as BERT's
    `tokenizer.vocab.keys()`, each token once, in order of first appearance."""
    return list(dict.fromkeys(vocab))


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
