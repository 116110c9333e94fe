"""The demo models' tokenizer: byte-level, built offline (no download), exact on any text.

The shipped tiny models use it, and so do the tests' tiny random-weight models (``lm_eval_moe.testing``).
"""

from __future__ import annotations

#: Byte-level tokenizer: ids 0..3 special, 4..259 the 256 bytes.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def byte_tokenizer(extra_special_tokens: tuple[str, ...] = ()):
    """A byte-level tokenizer (no merges) that encodes any text and decodes it back exactly."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_symbols = list(pre_tokenizers.ByteLevel.alphabet())
    byte_symbols.sort(key=lambda s: ord(s))
    specials = list(SPECIAL_TOKENS) + list(extra_special_tokens)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    # extra tokens come after the bytes, so every byte keeps its id: a model trained with the plain
    # tokenizer can be fine-tuned with added turn markers (its embeddings still line up)
    for symbol in [*byte_symbols, *extra_special_tokens]:
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>",
        additional_special_tokens=list(extra_special_tokens) or None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
