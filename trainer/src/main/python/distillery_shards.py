"""Writes Distillery teacher shards (docs/FORMATS.md, "Teacher shards") from Python.

Needs only numpy; torch tensors are accepted and converted (bfloat16 included). A shard directory
is a manifest.json and safetensors files of `sequences_per_shard` sequences each, with SHA-256
checksums, written to temporary names and renamed, so a crash leaves no half-written shard under
its final name.

    from distillery_shards import ShardWriter, topk_targets
    with ShardWriter("shards/train", vocab_size=V, seq_len=T, targets="topk", k=64, dtype="bf16",
                     temperature=1.0, tokenizer="gpt2", tokenizer_file="tokenizer.json") as w:
        for ids, logits in batches:                    # ids [n, T] integers, logits [n, T, V] float
            w.add(ids, **topk_targets(logits, k=64, temperature=1.0))

targets: "dense" (add(ids, logits=[n, T, V])), "topk" (topk_ids, topk_logits [n, T, k] and
logsumexp [n, T], the logsumexp over the FULL vocabulary at `temperature`), "sampled"
(sampled_ids, sampled_weights [n, T, k], each position's weights summing to 1).
"""
import hashlib
import json
import os

import numpy as np

__all__ = ["ShardWriter", "topk_targets"]

_DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def _numpy(x):
    """A numpy array from numpy or torch input; torch bfloat16 comes back as its uint16 bit pattern, tagged."""
    if hasattr(x, "detach"):   # torch
        import torch
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            return _Bf16Bits(x.contiguous().view(torch.int16).numpy().view(np.uint16))
        x = x.numpy()
    return np.asarray(x)


class _Bf16Bits:
    def __init__(self, bits):
        self.bits = bits
        self.shape = bits.shape


def _to_bf16_bits(x):
    """float32 to bfloat16 by round-to-nearest-even, as torch's .bfloat16() does (NaN kept NaN)."""
    if isinstance(x, _Bf16Bits):
        return x.bits
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _float(x, name):
    if isinstance(x, _Bf16Bits):
        return (x.bits.astype(np.uint32) << 16).view(np.float32)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    return x.astype(np.float32)


def _ids(x, name, vocab_size):
    if isinstance(x, _Bf16Bits) or not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{name} must be integers, got {getattr(x, 'dtype', 'bfloat16')}")
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        bad = tuple(int(i) for i in np.argwhere((x < 0) | (x >= vocab_size))[0])
        raise ValueError(f"{name}{list(bad)} is {x[bad]}, outside the vocabulary [0, {vocab_size})")
    return x.astype(np.int32)


def topk_targets(logits, k, temperature=1.0):
    """The top-k targets of logits [n, T, V]: ids and logits of the k largest, in descending order,
    and the logsumexp of logits / temperature over the whole vocabulary (not over the top-k)."""
    x = _float(_numpy(logits), "logits")
    part = np.argpartition(-x, k - 1, axis=-1)[..., :k] if k < x.shape[-1] else np.broadcast_to(np.arange(k), x.shape).copy()
    order = np.lexsort((part, -np.take_along_axis(x, part, axis=-1)), axis=-1)   # descending logit, then smaller id
    ids = np.take_along_axis(part, order, axis=-1)
    top = np.take_along_axis(x, ids, axis=-1)
    scaled = x / temperature
    m = scaled.max(axis=-1, keepdims=True)
    lse = (m[..., 0] + np.log(np.exp(scaled - m).sum(axis=-1))).astype(np.float32)
    return {"topk_ids": ids.astype(np.int32), "topk_logits": top, "logsumexp": lse}


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_safetensors(path, tensors):
    """tensors: name -> (dtype string, shape, bytes), in order."""
    header, offset = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for _, _, data in tensors.values():
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ShardWriter:
    """Collects sequences and writes a shard every `sequences_per_shard`; close() writes the rest and the manifest."""

    def __init__(self, out, vocab_size, seq_len, targets, k=0, dtype="bf16", temperature=1.0, tokenizer="", tokenizer_file=None,
                 teacher="", sequences_per_shard=1024, overwrite=False):
        if targets not in ("dense", "topk", "sampled"):
            raise ValueError(f"targets must be dense, topk or sampled, got {targets!r}")
        dtype = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}.get(dtype, dtype)
        if targets != "sampled" and dtype not in _DTYPES:
            raise ValueError(f"dtype must be f32, f16 or bf16, got {dtype!r}")
        if targets != "dense" and not 0 < k <= vocab_size:
            raise ValueError(f"k must be in [1, {vocab_size}] for {targets}, got {k}")
        if os.path.isdir(out) and os.listdir(out) and not overwrite:
            raise FileExistsError(f"{out} already holds files; pass overwrite=True or choose another folder")
        self.out, self.vocab, self.t, self.targets, self.k = out, vocab_size, seq_len, targets, (0 if targets == "dense" else k)
        self.dtype, self.temperature, self.per_shard = dtype, float(temperature), sequences_per_shard
        self.meta = {"tokenizer": tokenizer, "teacher": teacher}
        if tokenizer_file is not None:
            self.meta["tokenizer_sha256"] = _sha256(tokenizer_file)
        self.pending, self.shards = [], []

    def add(self, input_ids, **targets):
        """input_ids [n, seq_len]; the targets of the kind, as named in the module's doc."""
        ids = _ids(_numpy(input_ids), "input_ids", self.vocab)
        n = ids.shape[0]
        if ids.shape != (n, self.t):
            raise ValueError(f"input_ids has shape {ids.shape}, expected [n, {self.t}]")
        want = {"dense": ["logits"], "topk": ["topk_ids", "topk_logits", "logsumexp"], "sampled": ["sampled_ids", "sampled_weights"]}[self.targets]
        if sorted(targets) != sorted(want):
            raise ValueError(f"{self.targets} targets are {want}, got {sorted(targets)}")
        shapes = {"logits": (n, self.t, self.vocab), "logsumexp": (n, self.t)}
        out = {"input_ids": ids}
        for name in want:
            x = _numpy(targets[name])
            shape = shapes.get(name, (n, self.t, self.k))
            if tuple(x.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {list(shape)}")
            if name.endswith("_ids"):
                out[name] = _ids(x, name, self.vocab)
            elif name in ("logits", "topk_logits"):
                out[name] = _to_bf16_bits(x) if self.dtype == "bf16" else _float(x, name).astype(np.float16 if self.dtype == "f16" else np.float32)
            else:   # logsumexp and sampled_weights: float32 always (a bf16 logsumexp would shift every probability by up to 0.4%)
                out[name] = _float(x, name)
        for i in range(n):
            self.pending.append({name: a[i] for name, a in out.items()})
            if len(self.pending) == self.per_shard:
                self._flush()

    def _flush(self):
        if not self.pending:
            return
        file = "shard-%05d.safetensors" % len(self.shards)
        tensors = {}
        for name in self.pending[0]:
            stacked = np.ascontiguousarray(np.stack([p[name] for p in self.pending]))
            dtype = {np.dtype(np.int32): "I32", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.uint16): "BF16"}[stacked.dtype]
            tensors[name] = (dtype, stacked.shape, stacked.astype(stacked.dtype.newbyteorder("<")).tobytes())
        path = os.path.join(self.out, file)
        os.makedirs(self.out, exist_ok=True)   # only now: a writer that fails on its first add leaves nothing
        _write_safetensors(path, tensors)
        self.shards.append({"file": file, "sequences": len(self.pending), "sha256": _sha256(path)})
        self.pending = []

    def close(self):
        self._flush()
        if not self.shards:
            raise ValueError("no sequences were added")
        manifest = {"format_version": 1, "vocab_size": self.vocab, "seq_len": self.t, "targets": self.targets, "k": self.k,
                    "dtype": None if self.targets == "sampled" else self.dtype, "temperature": self.temperature, **self.meta,
                    "shards": self.shards}
        tmp = os.path.join(self.out, "manifest.json.tmp")
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=2)
        os.replace(tmp, os.path.join(self.out, "manifest.json"))

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is None:
            self.close()
