"""Makes a small Hugging Face Llama teacher to try the whole path on by hand: a byte-level BPE
tokenizer trained by Hugging Face `tokenizers` on a text file, and a LlamaForCausalLM (grouped-query
attention) trained briefly by torch on the same text, saved with save_pretrained beside its
tokenizer.json, as a model downloaded from the Hub would be.

    python bench/reference/make_llama_teacher.py CORPUS.txt OUT_DIR [--steps 300]

Needs transformers 5.x, tokenizers and torch 2.x (pip install --no-index --find-links DIR ...).
"""
import argparse
import os

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ap = argparse.ArgumentParser()
ap.add_argument("corpus")
ap.add_argument("out")
ap.add_argument("--vocab", type=int, default=2048)
ap.add_argument("--steps", type=int, default=300)
ap.add_argument("--seq", type=int, default=128)
a = ap.parse_args()
torch.manual_seed(1)
text = open(a.corpus, encoding="utf-8").read()

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=a.vocab, special_tokens=["<s>", "</s>"],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")

ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5,
                                     rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=0, eos_token_id=1))
opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
for step in range(a.steps):
    starts = torch.randint(0, len(ids) - a.seq - 1, (16,))
    batch = torch.stack([ids[s:s + a.seq + 1] for s in starts])
    loss = model(batch[:, :-1], labels=batch[:, :-1].clone()).loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 50 == 0 or step == a.steps - 1:
        print(f"step {step}: loss {loss.item():.3f}", flush=True)
model.eval()
model.save_pretrained(a.out)
fast.save_pretrained(a.out)
print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {tok.get_vocab_size()}, {len(ids):,} tokens of text")
