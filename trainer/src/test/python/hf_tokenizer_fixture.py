"""Records what Hugging Face `tokenizers` does with a tokenizer.json on a text: the ByteLevel
pre-tokenizer's pieces and the encoded ids. BytePairTokenizerHuggingFaceTest compares the Java
tokenizer with this record, so the JUnit suite needs no Python.

    python hf_tokenizer_fixture.py tokenizer.json hard-text.txt > hf-record.json

The fixtures in src/test/resources/dev/distillery/trainer/tokenizer: tokenizer-400.json is
`java -jar trainer.jar tokenize --vocab 400 --corpus TRAIN` where TRAIN is the bundled corpus's
first 30,000 characters followed by hard-text.txt three times; hf-record.json is this script's
output for it and hard-text.txt, with tokenizers 0.23.2 (pip install tokenizers).
"""
import json
import sys

from tokenizers import Tokenizer

tok = Tokenizer.from_file(sys.argv[1])
text = open(sys.argv[2], encoding="utf-8", newline="").read()
segments = text.split("<|endoftext|>")   # added tokens are split out before pre-tokenization
pieces = [[p for p, _ in tok.pre_tokenizer.pre_tokenize_str(s)] for s in segments]
json.dump({"tokenizers": __import__("tokenizers").__version__, "pieces": pieces,
           "ids": tok.encode(text, add_special_tokens=False).ids}, sys.stdout, ensure_ascii=False, indent=0)
print()
