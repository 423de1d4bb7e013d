"""Makes the fixtures of HuggingFaceTokenizerParityTest: the ids Hugging Face `tokenizers` gives a
mixed text under three kinds of tokenizer, so the JUnit suite checks Distillery's `tokenize`
against them with no Python.

    python tokenizer_parity_fixture.py RANKS_DIR OUT_DIR

RANKS_DIR holds r50k_base.tiktoken, cl100k_base.tiktoken and o200k_base.tiktoken (the files inside
the jtokkit jar, the same as tiktoken's). Written to OUT_DIR:
  gpt2-tokenizer.json.gz  GPT-2's tokenizer.json layout (ByteLevel with GPT-2's regex, BPE, and
                          <|endoftext|> = 50256) built from the r50k ranks
  sp-tokenizer.json       a SentencePiece-style BPE (Llama 2's layout: "▁" for spaces, a "▁" prefix,
                          byte fallback to <0xXX>), 600 tokens trained on the mixed text's source
  parity-ids.json         for each of gpt2, cl100k_base, o200k_base, sp: encode(text, add_special_tokens=False).ids
Needs tokenizers and transformers (its TikTokenConverter); made with tokenizers 0.23.2, transformers 5.17.
"""
import base64
import gzip
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer, AddedToken, decoders, models, normalizers, pre_tokenizers, trainers
from transformers.convert_slow_tokenizer import TikTokenConverter, bytes_to_unicode

ranks_dir, out = sys.argv[1], sys.argv[2]
here = os.path.dirname(os.path.abspath(__file__))
resources = os.path.join(here, "..", "resources", "dev", "distillery", "trainer", "tokenizer")
text = open(os.path.join(resources, "mixed-text.txt"), encoding="utf-8", newline="").read()

R50K = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
O200K = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+""",
])


def ranks(name):
    with open(os.path.join(ranks_dir, name + ".tiktoken"), "rb") as f:
        return {base64.b64decode(t): int(r) for t, r in (line.split() for line in f if line.strip())}


def gpt2():
    """GPT-2's own layout: the ByteLevel pre-tokenizer with its built-in regex, merges not ignored."""
    conv = TikTokenConverter(vocab_file=None)
    conv.load_tiktoken_bpe = lambda _: ranks("r50k_base")
    vocab, merges = conv.extract_vocab_merges_from_model(None)
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return with_specials(tok, {"<|endoftext|>": 50256})


def with_specials(tok, specials):
    """Added special tokens at their own ids (tiktoken's ids leave gaps that add_special_tokens would fill)."""
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for gap in range(len(vocab), max(specials.values())):   # ids tiktoken leaves unused: unreachable fillers
        if gap not in specials.values():
            vocab["<|unused-%d|>" % gap] = gap
    j["added_tokens"] = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for c, i in specials.items()]
    tok = Tokenizer.from_str(json.dumps(j))
    for c, i in specials.items():
        assert tok.token_to_id(c) == i, (c, tok.token_to_id(c), i)
    return tok


def tiktoken_style(name, pattern, specials):
    conv = TikTokenConverter(vocab_file=None, pattern=pattern)
    conv.load_tiktoken_bpe = lambda _: ranks(name)
    return with_specials(conv.converted(), specials)


def sentencepiece_style():
    """Llama 2's layout, trained small: bytes the vocabulary lacks fall back to <0xXX> tokens."""
    byte_tokens = ["<0x%02X>" % b for b in range(256)]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  limit_alphabet=80, show_progress=False)
    source = open(os.path.join(resources, "hard-text.txt"), encoding="utf-8").read()
    tok.train_from_iterator([source * 3, text.replace("\U0001F600", "")], trainer)
    return tok


os.makedirs(out, exist_ok=True)
g = gpt2()
with gzip.open(os.path.join(out, "gpt2-tokenizer.json.gz"), "wt", encoding="utf-8") as f:
    f.write(g.to_str())
sp = sentencepiece_style()
sp.save(os.path.join(out, "sp-tokenizer.json"))
cl = tiktoken_style("cl100k_base", TikTokenConverter().pattern,
                    {"<|endoftext|>": 100257, "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260})
o2 = tiktoken_style("o200k_base", O200K, {"<|endoftext|>": 199999})
ids = {name: t.encode(text, add_special_tokens=False).ids for name, t in
       [("gpt2", g), ("cl100k_base", cl), ("o200k_base", o2), ("sp", sp)]}
assert any(i >= 3 and i < 259 for i in ids["sp"]), "the SentencePiece-style text must use byte fallback"
json.dump({"tokenizers": tokenizers.__version__, "ids": ids}, open(os.path.join(out, "parity-ids.json"), "w"))
print({k: len(v) for k, v in ids.items()})
