"""PyTorch twin of `aigc_jax.models.autoregressive.GPT` for `benchmarks/gpt_vs_torch.py` (eager mode).

Same layout: pre-LayerNorm blocks without biases, separate q/k/v projections, causal scaled-dot-product attention,
exact GELU MLP (4x), learned positions, tied embeddings, GPT-2 init; AdamW with weight decay on rank >= 2 params,
global-norm clipping. PyTorch is the optional `bench` extra, never a core dependency.

`make_twin` returns ``(step, torch, n_params)``; ``step.model`` and ``step.opt`` are the module and optimizer, and
`to_jax_params` copies the twin's weights into our parameter layout (``tests/test_gpt.py`` trains both in
lockstep from the same weights and batches).
"""

from __future__ import annotations

import math

import numpy as np


def make_twin(vocab, context, layers, heads, width, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, clip=1.0,
              threads: int | None = None):
    import torch
    from torch import nn
    from torch.nn import functional as F

    if threads:
        torch.set_num_threads(threads)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(width, bias=False)
            self.q = nn.Linear(width, width, bias=False)
            self.k = nn.Linear(width, width, bias=False)
            self.v = nn.Linear(width, width, bias=False)
            self.o = nn.Linear(width, width, bias=False)
            self.ln2 = nn.LayerNorm(width, bias=False)
            self.fc = nn.Linear(width, 4 * width, bias=False)
            self.proj = nn.Linear(4 * width, width, bias=False)

        def forward(self, x):
            b, t, d = x.shape
            y = self.ln1(x)
            q, k, v = (m(y).view(b, t, heads, d // heads).transpose(1, 2) for m in (self.q, self.k, self.v))
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            return x + self.proj(F.gelu(self.fc(self.ln2(x))))

    class TwinGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, width)
            self.wpe = nn.Embedding(context, width)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(width, bias=False)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * layers) if name.endswith(("o.weight", "proj.weight")) else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            t = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(t))
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.T
            return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))

    model = TwinGPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay,
                                                                                "weight_decay": 0.0}],
                            lr=lr, betas=betas)

    def step(tokens_np):
        toks = torch.from_numpy(tokens_np).long()
        loss = model(toks[:, :-1], toks[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return loss

    step.model, step.opt = model, opt
    n_params = sum(p.numel() for p in model.parameters())
    return step, torch, n_params


def nanogpt_lr(it: int, lr: float = 1e-3, min_lr: float = 1e-4, warmup: int = 100, decay_iters: int = 2000) -> float:
    """nanoGPT's ``get_lr``: linear warm-up from ``lr / (warmup + 1)``, cosine decay to ``min_lr`` at ``decay_iters``
    (written out independently of Optax, so that comparing the two checks our schedule)."""
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * (it - warmup) / (decay_iters - warmup))) * (lr - min_lr)


def nanogpt_start_weights(vocab: int, context: int, layers: int, width: int) -> dict:
    """The weights nanoGPT's ``GPT(config)`` (bias=False) draws from torch's global generator, as a state dict of
    the twin.

    nanoGPT builds its modules in order (each ``nn.Embedding`` and ``nn.Linear`` draws its default init), ties
    ``lm_head`` to ``wte``, re-draws every Linear and Embedding weight from N(0, 0.02) in module post-order (the tied
    matrix twice: as ``wte`` and as ``lm_head``), then both residual projections of every block from
    N(0, 0.02 / sqrt(2 * layers)). Building the same shapes in the same order leaves the generator where nanoGPT's
    leaves it, so the batches drawn next are nanoGPT's as well. Its fused ``c_attn`` rows are q, k, v in turn.
    """
    import torch
    from torch import nn

    std = 0.02
    nn.Embedding(vocab, width)  # wte: its default draw is discarded when lm_head's matrix replaces it
    wpe = nn.Embedding(context, width)
    blocks = [[nn.Linear(n_in, n_out, bias=False) for n_in, n_out in
               ((width, 3 * width), (width, width), (width, 4 * width), (4 * width, width))] for _ in range(layers)]
    head = nn.Linear(width, vocab, bias=False)
    with torch.no_grad():
        for w in [head.weight, wpe.weight, *(lin.weight for blk in blocks for lin in blk), head.weight]:
            w.normal_(0.0, std)
        for blk in blocks:
            for lin in (blk[1], blk[3]):
                lin.weight.normal_(0.0, std / math.sqrt(2 * layers))
    sd = {"wte.weight": head.weight, "wpe.weight": wpe.weight, "ln_f.weight": torch.ones(width)}
    for i, (qkv, o, fc, proj) in enumerate(blocks):
        q, k, v = qkv.weight.split(width, dim=0)
        sd.update({f"blocks.{i}.{name}.weight": w for name, w in
                   (("q", q), ("k", k), ("v", v), ("o", o.weight), ("fc", fc.weight), ("proj", proj.weight),
                    ("ln1", torch.ones(width)), ("ln2", torch.ones(width)))})
    return {k: v.detach().clone() for k, v in sd.items()}


def to_jax_params(model, layers: int, heads: int, vocab_rows: int | None = None) -> dict:
    """The twin's weights as ``GPT`` params ``{"gpt": ...}`` (numpy float32; Linear weights are [out, in]).
    ``vocab_rows``: the GPT's padded embedding rows (``GPTConfig.padded_vocab``); the extra rows are zeros, whose
    logits the GPT masks, so both models compute the same function (and AdamW keeps zero rows at zero)."""
    sd = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    wte = sd["wte.weight"]
    if vocab_rows is not None and vocab_rows > wte.shape[0]:
        sd["wte.weight"] = np.concatenate([wte, np.zeros((vocab_rows - wte.shape[0], wte.shape[1]), wte.dtype)])
    d = sd["wte.weight"].shape[1]
    h = d // heads
    blocks = {}
    for i in range(layers):
        pre = f"blocks.{i}."
        blocks[i] = {
            "ln1": {"scale": sd[pre + "ln1.weight"]},
            "ln2": {"scale": sd[pre + "ln2.weight"]},
            "wq": sd[pre + "q.weight"].T.reshape(d, heads, h),
            "wk": sd[pre + "k.weight"].T.reshape(d, heads, h),
            "wv": sd[pre + "v.weight"].T.reshape(d, heads, h),
            "wo": sd[pre + "o.weight"].T.reshape(heads, h, d),
            "w_in": sd[pre + "fc.weight"].T.copy(),
            "w_out": sd[pre + "proj.weight"].T.copy(),
        }
    return {"gpt": {"wte": sd["wte.weight"], "wpe": sd["wpe.weight"], "ln_f": {"scale": sd["ln_f.weight"]},
                    "blocks": blocks}}
