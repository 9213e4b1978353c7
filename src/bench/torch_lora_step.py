"""PyTorch baseline for `npm run bench:model`: one LoRA training step of a Llama-shaped model in fp32.

Reads one JSON object on stdin (shape, LoRA settings, threads, the token sequences of the batch) and
prints one JSON line: the warm-up and measured step times and tokens/s of the measured step.
The step matches helora's fp32 row: RMSNorm, RoPE, GQA attention with a causal mask per sequence,
SwiGLU MLP, tied LM head, mean next-token cross-entropy; LoRA (dropout on the branch input) on the
given projections; frozen base weights; global-norm clipping; AdamW on the LoRA parameters only.
Needs Debian's python3-torch (its BLAS is libblas.so.3, the OpenBLAS alternative).
"""
import json
import math
import sys
import time

import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rope_tables(seq_len, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    ang = torch.cat([ang, ang], dim=-1)  # HF Llama layout: rotate halves
    return ang.cos(), ang.sin()


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class LoraLinear:
    """Frozen W [out, in] plus scale * B A dropout(x) with trainable A [r, in], B [out, r]."""

    def __init__(self, out_dim, in_dim, lora, gen):
        self.w = (torch.randn(out_dim, in_dim, generator=gen) * 0.02).requires_grad_(False)
        self.a = None
        if lora is not None:
            rank, alpha, self.dropout = lora
            bound = 1.0 / math.sqrt(in_dim)
            self.a = (torch.rand(rank, in_dim, generator=gen) * 2 * bound - bound).requires_grad_(True)
            self.b = torch.zeros(out_dim, rank, requires_grad=True)
            self.scale = alpha / rank

    def __call__(self, x):
        y = x @ self.w.t()
        if self.a is not None:
            h = F.dropout(x, self.dropout, training=True) @ self.a.t()
            y = y + self.scale * (h @ self.b.t())
        return y

    def params(self):
        return [] if self.a is None else [self.a, self.b]


def main():
    cfg = json.load(sys.stdin)
    torch.set_num_threads(int(cfg["threads"]))
    gen = torch.Generator().manual_seed(1)
    hid, inter = cfg["hidden_size"], cfg["intermediate_size"]
    nh, nkv, vocab = cfg["num_heads"], cfg["num_kv_heads"], cfg["vocab_size"]
    hd = hid // nh
    eps = cfg["rms_norm_eps"]
    targets = set(cfg["targets"])
    lora_of = lambda name: (cfg["rank"], cfg["alpha"], cfg["dropout"]) if name in targets else None

    embed = (torch.randn(vocab, hid, generator=gen) * 0.02).requires_grad_(False)
    final_norm = torch.ones(hid)
    layers = []
    for _ in range(cfg["num_layers"]):
        lin = lambda name, o, i: LoraLinear(o, i, lora_of(name), gen)
        layers.append({
            "ln1": torch.ones(hid), "ln2": torch.ones(hid),
            "q_proj": lin("q_proj", nh * hd, hid), "k_proj": lin("k_proj", nkv * hd, hid),
            "v_proj": lin("v_proj", nkv * hd, hid), "o_proj": lin("o_proj", hid, nh * hd),
            "gate_proj": lin("gate_proj", inter, hid), "up_proj": lin("up_proj", inter, hid),
            "down_proj": lin("down_proj", hid, inter),
        })
    params = [p for L in layers for k, m in L.items() if isinstance(m, LoraLinear) for p in m.params()]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    seqs = torch.tensor(cfg["sequences"], dtype=torch.long)  # [B, L]
    B, L = seqs.shape
    cos, sin = rope_tables(L, hd, cfg["rope_theta"])
    causal = torch.full((L, L), float("-inf")).triu(1)

    def step():
        x = embed[seqs]  # [B, L, hid]
        for Ly in layers:
            h = rms_norm(x, Ly["ln1"], eps)
            q = Ly["q_proj"](h).view(B, L, nh, hd).transpose(1, 2)
            k = Ly["k_proj"](h).view(B, L, nkv, hd).transpose(1, 2)
            v = Ly["v_proj"](h).view(B, L, nkv, hd).transpose(1, 2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            k = k.repeat_interleave(nh // nkv, dim=1)
            v = v.repeat_interleave(nh // nkv, dim=1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, dim=-1)
            o = (att @ v).transpose(1, 2).reshape(B, L, nh * hd)
            x = x + Ly["o_proj"](o)
            h = rms_norm(x, Ly["ln2"], eps)
            x = x + Ly["down_proj"](F.silu(Ly["gate_proj"](h)) * Ly["up_proj"](h))
        logits = rms_norm(x, final_norm, eps) @ embed.t()  # tied LM head
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab), seqs[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    step()  # warm-up
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss = step()
    s = time.perf_counter() - t0
    print(json.dumps({
        "tokens": B * L, "warmup_s": warm, "step_s": s, "tokens_per_s": B * L / s, "loss": loss,
        "torch_version": torch.__version__, "threads": torch.get_num_threads(), "lora_parameters": sum(p.numel() for p in params),
    }))


if __name__ == "__main__":
    main()
