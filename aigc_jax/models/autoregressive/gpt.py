"""GPT: a decoder-only transformer (Radford et al. 2018/2019; nanoGPT's layout) as pure functions.

Pre-LayerNorm blocks, causal self-attention (`aigc_jax.nn.attention`), GELU MLP, learned positions,
tied input/output embeddings, optional biases and dropout. Every parameter carries logical axis names
(``vocab, embed, heads, head_dim, mlp``); ``GPTConfig.axis_rules`` maps them to the mesh axes
``data, fsdp, tensor`` (a short rule table), which gives FSDP and tensor parallelism in the one trainer.

Shapes: tokens ``[B, T]`` int32; activations ``[B, T, D]``; attention ``q, k, v [B, T, N, H]`` with ``D = N * H``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from aigc_jax.core.config import ModelConfig
from aigc_jax.core.contract import (
    Condition,
    CountsFlops,
    Extras,
    GenerativeModel,
    LowRankAdaptable,
    ModelSpec,
    Partitioned,
    TokenLikelihood,
)
from aigc_jax.core.errors import UserError
from aigc_jax.core.paths import key_name
from aigc_jax.models.autoregressive.sampling import decode_loop
from aigc_jax.nn.attention import causal_attention
from aigc_jax.nn.layers import ParamKeys, dropout
from aigc_jax.nn.linear import dense
from aigc_jax.parallel.mesh import BATCH_AXES, constrain

LOGICAL_AXES = ("vocab", "embed", "heads", "head_dim", "mlp", "pos", "layers")


@dataclasses.dataclass(frozen=True)
class GPTConfig(ModelConfig):
    # Configs written before vocab_multiple existed trained an unpadded embedding.
    STORED_DEFAULTS: ClassVar[dict] = {"vocab_multiple": 1}

    vocab_size: int = 65
    # The embedding has vocab_size rounded up to a multiple of this many rows (nanoGPT pads GPT-2's 50,257 to 50,304),
    # so that tensor and FSDP sharding can split it; the extra rows' logits are masked (-inf), so losses and samples
    # are those of the unpadded model. 128 divides every power-of-two mesh axis up to 128 and the TPU lane width.
    vocab_multiple: int = 128
    context: int = 64
    layers: int = 4
    heads: int = 4
    width: int = 128
    mlp_ratio: int = 4
    dropout: float = 0.0
    bias: bool = False
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # params stay float32 (master copy)
    remat: bool = False  # rematerialise each block in the backward pass
    # One block's program applied by jax.lax.scan over parameters stacked on a leading "layers" axis (params at
    # gpt/blocks/NAME [layers, ...] instead of gpt/blocks/I/NAME): compile time and program size stop growing with
    # depth (MaxText's scan_layers), which large models need; the unrolled loop is faster to run on CPU.
    scan_layers: bool = False
    # logical axis -> mesh axis; unnamed logical axes are replicated
    axis_rules: str = "vocab:tensor,embed:fsdp,heads:tensor,mlp:tensor"
    sample_tokens: int = 300  # new tokens in the text samples written during training
    temperature: float = 0.8
    top_k: int = 0
    top_p: float = 1.0

    def validate(self) -> None:
        if self.width % self.heads:
            raise UserError(f"model.width={self.width} must be divisible by model.heads={self.heads}")
        if min(self.vocab_size, self.vocab_multiple, self.context, self.layers, self.heads, self.width,
               self.mlp_ratio) < 1:
            raise UserError("model.vocab_size, vocab_multiple, context, layers, heads, width and mlp_ratio must "
                            "be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"bad value {self.dropout} for model.dropout: expected 0 <= dropout < 1")
        parse_rules(self.axis_rules)
        if self.temperature < 0 or not 0.0 < self.top_p <= 1.0 or self.top_k < 0 or self.sample_tokens < 1:
            raise UserError(f"model sampling settings temperature={self.temperature}, top_p={self.top_p}, "
                            f"top_k={self.top_k}, sample_tokens={self.sample_tokens}: expected temperature >= 0, "
                            "0 < top_p <= 1, top_k >= 0 (0: off) and sample_tokens >= 1")

    def rules(self) -> dict[str, str | None]:
        return parse_rules(self.axis_rules)

    @property
    def padded_vocab(self) -> int:
        """Rows of the embedding (and columns of the logits): vocab_size rounded up to a multiple of vocab_multiple."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple


def parse_rules(text: str) -> dict[str, str | None]:
    rules: dict[str, str | None] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, axis = part.partition(":")
        if name not in LOGICAL_AXES or axis not in ("data", "fsdp", "tensor", "none", ""):
            raise UserError(
                f"bad model.axis_rules entry {part!r}: expected LOGICAL:MESH with LOGICAL one of "
                f"{', '.join(LOGICAL_AXES)} and MESH one of data, fsdp, tensor, none"
            )
        rules[name] = None if axis in ("none", "") else axis
    return rules


def _param(rngs, init, shape, names):
    return nnx.Param(init(rngs.params(), shape, jnp.float32), out_sharding=names)


class LayerNorm(nnx.Module):
    def __init__(self, width: int, bias: bool, rngs: nnx.Rngs):
        self.scale = nnx.Param(jnp.ones((width,), jnp.float32), out_sharding=("embed",))
        self.bias = nnx.Param(jnp.zeros((width,), jnp.float32), out_sharding=("embed",)) if bias else None

    def __call__(self, x):
        xf = x.astype(jnp.float32)
        mean = xf.mean(-1, keepdims=True)
        var = jnp.square(xf - mean).mean(-1, keepdims=True)
        y = (xf - mean) * jax.lax.rsqrt(var + 1e-5) * _bcast(self.scale[...].astype(jnp.float32), x.ndim)
        if self.bias is not None:
            y = y + _bcast(self.bias[...].astype(jnp.float32), x.ndim)
        return y.astype(x.dtype)


def _gathered(spec: P) -> P:
    """A weight's layout at its use under FSDP: its mesh spec without the fsdp axis (all-gathered)."""
    return P(*(None if axis == "fsdp" else axis for axis in spec))


def _bcast(v, ndim):
    """Right-align a parameter for an explicit broadcast (the tests run with rank promotion disabled)."""
    return v.reshape((1,) * (ndim - v.ndim) + v.shape)


class Block(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        d, n = cfg.width, cfg.heads
        h, m = d // n, d * cfg.mlp_ratio
        init = nnx.initializers.normal(0.02)
        out_init = nnx.initializers.normal(0.02 / math.sqrt(2 * cfg.layers))  # GPT-2's scaled residual init
        zeros = nnx.initializers.zeros_init()
        self.ln1 = LayerNorm(d, cfg.bias, rngs)
        self.wq = _param(rngs, init, (d, n, h), ("embed", "heads", "head_dim"))
        self.wk = _param(rngs, init, (d, n, h), ("embed", "heads", "head_dim"))
        self.wv = _param(rngs, init, (d, n, h), ("embed", "heads", "head_dim"))
        self.wo = _param(rngs, out_init, (n, h, d), ("heads", "head_dim", "embed"))
        self.ln2 = LayerNorm(d, cfg.bias, rngs)
        self.w_in = _param(rngs, init, (d, m), ("embed", "mlp"))
        self.w_out = _param(rngs, out_init, (m, d), ("mlp", "embed"))
        if cfg.bias:
            self.bq = _param(rngs, zeros, (n, h), ("heads", "head_dim"))
            self.bk = _param(rngs, zeros, (n, h), ("heads", "head_dim"))
            self.bv = _param(rngs, zeros, (n, h), ("heads", "head_dim"))
            self.bo = _param(rngs, zeros, (d,), ("embed",))
            self.b_in = _param(rngs, zeros, (m,), ("mlp",))
            self.b_out = _param(rngs, zeros, (d,), ("embed",))
        self.use_bias = cfg.bias
        self.dropout = cfg.dropout

    def __call__(self, x, key, cache=None, pos=None, query_at=None):
        """x [B, T, D] -> [B, T, D]. With ``cache = (k [B, S, N, H], v [B, S, N, H])`` the T new positions start at
        ``pos``; keys at positions <= each query's are attended. With ``query_at`` (an index into T, may be traced)
        only that position's output ``[B, 1, D]`` is computed: every position's keys and values, one query, one
        MLP row (the causal mask makes it that position's row of the full output). Returns (x, new cache or
        None)."""
        k1, k2 = (None, None) if key is None else jax.random.split(key)
        y = self.ln1(x)
        b, t, d = y.shape
        wq, wk, wv = self.wq[...], self.wk[...], self.wv[...]
        n, h = wq.shape[1], wq.shape[2]
        # One [D, 3 N H] product instead of three (fewer, larger matmuls run faster on CPU).
        w_qkv = jnp.concatenate([wq.reshape(d, n * h), wk.reshape(d, n * h), wv.reshape(d, n * h)], axis=1)
        q, k, v = (z.reshape(b, t, n, h) for z in jnp.split(dense(y, w_qkv), 3, axis=-1))
        if self.use_bias:
            q, k, v = (z + _bcast(bias[...], 4).astype(z.dtype)
                       for z, bias in ((q, self.bq), (k, self.bk), (v, self.bv)))
        if query_at is not None:
            q = jax.lax.dynamic_slice_in_dim(q, query_at, 1, axis=1)
            x = jax.lax.dynamic_slice_in_dim(x, query_at, 1, axis=1)
            att = _masked_attention(q, k, v, (jnp.arange(t) <= query_at)[None, None, None, :])  # mask [1, 1, 1, T]
            t, new_cache = 1, None
        elif cache is None:
            att = causal_attention(q, k, v)  # its hand-written VJP inside the train step (nn.reverse_mode_kernels)
            new_cache = None
        else:
            ck, cv = cache
            ck = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (0, pos, 0, 0))
            cv = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (0, pos, 0, 0))
            s = ck.shape[1]
            mask = (jnp.arange(s)[None, :] <= (pos + jnp.arange(t))[:, None])[None, None]  # [1, 1, T, S]
            att = _masked_attention(q, ck.astype(q.dtype), cv.astype(q.dtype), mask)
            new_cache = (ck, cv)
        out = dense(att.reshape(b, t, n * h), self.wo[...].reshape(n * h, d))
        if self.use_bias:
            out = out + _bcast(self.bo[...], 3).astype(out.dtype)
        x = x + dropout(out, self.dropout, k1)
        y = self.ln2(x)
        hdn = dense(y, self.w_in[...])
        if self.use_bias:
            hdn = hdn + _bcast(self.b_in[...], 3).astype(hdn.dtype)
        hdn = _gelu(hdn.astype(jnp.float32)).astype(hdn.dtype)  # float32: XLA:CPU's bfloat16 erf is much slower
        out = dense(hdn, self.w_out[...])
        if self.use_bias:
            out = out + _bcast(self.b_out[...], 3).astype(out.dtype)
        return x + dropout(out, self.dropout, k2), new_cache


def _masked_attention(q, k, v, mask):
    """Softmax attention of queries ``[B, T, N, H]`` over keys/values ``[B, S, N, H]`` where ``mask`` (broadcast to
    ``[B, N, T, S]``) is true: the decoding paths (a KV cache, one queried position)."""
    with jax.numpy_dtype_promotion("standard"):  # it promotes bfloat16 with float32 internally
        return jax.nn.dot_product_attention(q, k, v, mask=mask)


def _gelu(x: jax.Array) -> jax.Array:
    """Exact GELU, ``x * Phi(x)``, written with erf as PyTorch's ``nn.GELU`` (nanoGPT's) computes it.
    ``jax.nn.gelu(approximate=False)`` uses the erfc form, whose forward costs XLA:CPU 1.7x more (270 vs 155 us on
    768x512); the two agree to 1e-6."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


class GPTNetwork(nnx.Module):
    def __init__(self, cfg: GPTConfig, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.wte = _param(rngs, init, (cfg.padded_vocab, cfg.width), ("vocab", "embed"))
        self.wpe = _param(rngs, init, (cfg.context, cfg.width), ("pos", "embed"))
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(0 if cfg.scan_layers else cfg.layers)])
        self.ln_f = LayerNorm(cfg.width, cfg.bias, rngs)


class GPT(GenerativeModel, TokenLikelihood, Partitioned, LowRankAdaptable, Extras, CountsFlops):
    """Pure functions of a GPT over plain-pytree params ``{"gpt": {...}}``."""

    players = ("gpt",)
    cpu_data_parallel = True  # the -cpu step: 23.5 -> 36.1 steps/s over 2 devices (benchmarks/README.md)

    def __init__(self, config: GPTConfig):
        self.config = config
        v = config.vocab_size
        conditions = (
            Condition("prompt", "tokens", vocab_size=v, doc="the tokens to continue (default: token 0)"),
            Condition("tokens", "setting", low=1, default=config.sample_tokens, doc="new tokens to generate"),
            Condition("temperature", "setting", dtype="float32", low=0.0, default=config.temperature,
                      doc="sampling temperature (0: greedy)"),
            Condition("top_k", "setting", low=0, default=config.top_k, doc="keep the k most likely tokens (0: all)"),
            Condition("top_p", "setting", dtype="float32", low=0.0, low_open=True, high=1.0, default=config.top_p,
                      doc="nucleus sampling mass (1: off)"),
        )
        # The loss is a mean over equal-length sequences with no randomness when there is no dropout, no state
        # update and no metrics but the loss: a data-parallel step may differentiate it per device and reduce once.
        self._spec = ModelSpec(output="tokens", shape=(config.context,), conditions=conditions, vocab_size=v,
                               data_dims=config.context, metrics=("loss", "nll"), default_metrics=("loss", "nll"),
                               per_example_loss=config.dropout == 0)
        with nnx.use_eager_sharding(False):
            abstract = nnx.eval_shape(lambda: GPTNetwork(config, ParamKeys(0)))
            block_abstract = nnx.eval_shape(lambda: Block(config, ParamKeys(0)))
        self._graphdef, abstract_state = nnx.split(abstract)
        self._logical = nnx.to_pure_dict(nnx.get_partition_spec(abstract_state))
        self._block_graphdef, block_state = nnx.split(block_abstract)
        if config.scan_layers:  # every block weight gains a leading "layers" axis
            block_logical = nnx.to_pure_dict(nnx.get_partition_spec(block_state))
            self._logical["blocks"] = jax.tree.map(lambda spec: P("layers", *spec), block_logical,
                                                   is_leaf=lambda x: isinstance(x, P))
        self.dtype = jnp.bfloat16 if config.compute_dtype == "bfloat16" else jnp.float32
        # Where weights are used: their mesh layout with the fsdp axis gathered (a scanned block's weights per
        # layer, without the layers axis); activations [B, T, D] split over the batch axes.
        specs = self.param_partition_specs()["gpt"]
        blocks = specs.pop("blocks")
        one = jax.tree.map(lambda spec: P(*spec[1:]), blocks, is_leaf=lambda x: isinstance(x, P)) \
            if config.scan_layers else blocks[0]
        self._use_specs = {**jax.tree.map(_gathered, specs, is_leaf=lambda x: isinstance(x, P)),
                           "block": jax.tree.map(_gathered, one, is_leaf=lambda x: isinstance(x, P))}
        self._act = P(BATCH_AXES, None, None)

    @property
    def spec(self) -> ModelSpec:
        return self._spec

    # -- sharding ---------------------------------------------------------------------------------------------
    def logical_axes(self):
        """Logical axis names of every parameter (a pytree of PartitionSpecs over logical names)."""
        return {"gpt": self._logical}

    def param_partition_specs(self):
        """PartitionSpecs over mesh axes, from the logical names and ``axis_rules``."""
        rules = self.config.rules()

        def to_mesh(spec):
            axes = [rules.get(n) if n else None for n in spec]
            named = [a for a in axes if a is not None]
            if len(set(named)) < len(named):
                raise UserError(f"model.axis_rules={self.config.axis_rules!r} maps two axes of a {tuple(spec)} "
                                "weight to the same mesh axis; give each logical axis of a weight its own mesh axis")
            return P(*axes)

        return jax.tree.map(to_mesh, self.logical_axes(), is_leaf=lambda x: isinstance(x, P))

    def adaptable_weights(self):
        """The attention and MLP projections (every weight with two or more axes besides "layers", except the
        vocabulary and position embeddings): q/k/v ``[embed, heads, head_dim]`` and the MLP's ``[embed, mlp]``
        read one input axis; the output projection ``[heads, head_dim, embed]`` and ``[mlp, embed]`` all but
        the last."""
        out = {}
        for path, spec in jax.tree_util.tree_flatten_with_path(self.logical_axes(),
                                                                is_leaf=lambda x: isinstance(x, P))[0]:
            names = tuple(spec)
            stacked = names.count("layers")
            rest = names[stacked:]
            if len(rest) < 2 or "vocab" in rest or "pos" in rest:
                continue
            out["/".join(key_name(k) for k in path)] = (stacked, 1 if rest[0] == "embed" else len(rest) - 1)
        return out

    # -- the network --------------------------------------------------------------------------------------------
    def init(self, key):
        cfg = self.config
        with nnx.use_eager_sharding(False):
            net = GPTNetwork(cfg, ParamKeys(key))
            params = nnx.to_pure_dict(nnx.state(net))
            if cfg.scan_layers:
                def one_block(k):
                    return nnx.to_pure_dict(nnx.state(Block(cfg, ParamKeys(k))))

                params["blocks"] = jax.vmap(one_block)(jax.random.split(jax.random.fold_in(key, 1), cfg.layers))
        return {"gpt": params}, {}

    def apply(self, params, tokens, key=None, cache=None, pos=0, at=None):
        """Logits float32 ``[B, T, V']`` for tokens ``[B, T]`` at positions ``pos..pos+T-1``, ``V' =
        padded_vocab`` with the padding columns at -inf; with a KV cache (a list of ``(k, v)`` per layer, or one
        stacked ``(k, v)`` with ``scan_layers``) also returns the updated cache. ``key`` enables dropout.

        ``at`` (an index into T, may be traced; no cache): only that position's logits ``[B, 1, V']``, equal to
        ``apply(...)[:, at:at + 1]``. The last block then computes one query and one MLP row, and the output
        layer one row: a sliding-window sampler needs one position per forward pass."""
        cfg = self.config
        if at is not None and cache is not None:
            raise ValueError("apply(at=...) computes one position of a full forward pass: it takes no cache")
        top = params["gpt"]
        if cfg.scan_layers:
            top = {**top, "blocks": {}}
        net = nnx.merge(self._graphdef, top)  # params stay float32 (cast at the matmuls)
        t = tokens.shape[1]
        use = self._use_specs
        # Sharding (inside the trainer's mesh; nothing elsewhere, see `constrain`): FSDP gathers each weight over
        # fsdp where it is used and keeps activations split over the batch axes, tensor parallelism splits heads,
        # MLP and vocabulary. Without these hints GSPMD may instead move a batch-sharded activation onto a weight's
        # fsdp-sharded axis: the embedding lookup then replicates the whole activation ("involuntary full
        # rematerialization") and the logits lose their batch split.
        wte = constrain(jnp.asarray(net.wte[...]), use["wte"])  # (loaded params are numpy; tokens may be traced)
        wpe = constrain(jnp.asarray(net.wpe[...]), use["wpe"])
        x = wte[tokens] + jax.lax.dynamic_slice_in_dim(wpe, pos, t, axis=0)[None]  # [B, T, D]
        x = constrain(x.astype(self.dtype), self._act)  # params stay float32; activations in the compute dtype
        keys = [None] * (cfg.layers + 1) if key is None else list(jax.random.split(key, cfg.layers + 1))
        x = dropout(x, cfg.dropout, keys[-1])
        new_cache = []
        if cfg.scan_layers:
            x, new_cache = self._scan_blocks(params["gpt"]["blocks"], x, key, cache, pos)
        for i in range(0 if cfg.scan_layers else cfg.layers):
            state = params["gpt"]["blocks"][i]
            last = at if i == cfg.layers - 1 else None
            if cfg.remat and cache is None and last is None:  # the gathered weights are recomputed too
                x = jax.checkpoint(lambda s, x, k: self._block(s, x, k)[0])(state, x, keys[i])
            else:
                x, c = self._block(state, x, keys[i], None if cache is None else cache[i], pos, last)
                new_cache.append(c)
        if at is not None and cfg.scan_layers:  # the scanned blocks are one traced body: take the row after it
            x = jax.lax.dynamic_slice_in_dim(x, at, 1, axis=1)
        x = net.ln_f(x)
        logits = jnp.einsum("btd,vd->btv", x, wte.astype(x.dtype),  # tied output embedding
                            preferred_element_type=jnp.float32)
        logits = constrain(logits, P(*self._act[:2], cfg.rules().get("vocab")))
        if cfg.padded_vocab > cfg.vocab_size:  # padding rows are never a token: probability exactly 0
            real = (jnp.arange(cfg.padded_vocab) < cfg.vocab_size)[None, None, :]
            logits = jnp.where(real, logits, -jnp.inf)
        return logits if cache is None else (logits, new_cache)

    def _block(self, state, x, key, cache=None, pos=None, query_at=None):
        """One block from its params (each weight gathered over fsdp here, at its use); ``x`` stays batch-split."""
        state = jax.tree.map(constrain, state, self._use_specs["block"], is_leaf=lambda v: v is None)
        x, cache = nnx.merge(self._block_graphdef, state)(x, key, cache, pos, query_at)
        return constrain(x, self._act), cache

    def _scan_blocks(self, stacked, x, key, cache, pos):
        """The blocks of ``scan_layers``: ``jax.lax.scan`` over the stacked block params (and the stacked cache
        ``(k, v) [L, B, S, N, H]``), one traced block; per-block rematerialisation inside the scan body."""
        cfg = self.config
        xs = {"p": stacked}
        if key is not None:
            xs["key"] = jax.random.split(jax.random.fold_in(key, 1), cfg.layers)
        if cache is not None:
            xs["cache"] = cache

        def body(x, xs):
            return self._block(xs["p"], x, xs.get("key"), xs.get("cache"), pos)

        if cfg.remat and cache is None:
            body = jax.checkpoint(body, prevent_cse=False)
        x, new_cache = jax.lax.scan(body, x, xs)
        return x, new_cache

    # -- the contract -------------------------------------------------------------------------------------------
    def _token_nll(self, params, batch, key):
        toks = batch["tokens"]
        logits = self.apply(params, toks[:, :-1], key)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.take_along_axis(logp, toks[:, 1:, None], axis=-1)[..., 0]  # [B, T]

    def loss(self, player, params, state, batch, key):
        nll = self._token_nll(params, batch, key if self.config.dropout > 0 else None)
        loss = nll.mean()
        # No train-time perplexity: exp of a per-device mean would not average to exp of the mean (the per-device
        # step averages metrics); `aigc-jax eval` reports test_perplexity from the mean loss.
        return loss, ({}, state)

    def eval_metrics(self, params, state, batch, key):
        nll = self._token_nll(params, batch, None)
        return {"loss": nll.mean(-1)}

    def log_prob(self, params, batch, key=None):
        """``log p(tokens[1:] | tokens[0])`` per window ``[B]`` in nats, for windows ``batch["tokens"] [B, T + 1]``
        (a sum over the T predicted tokens: ``spec.data_dims``)."""
        return -self._token_nll(params, batch, None).sum(-1)

    def token_log_probs(self, params, batch, key=None):
        """``log p(tokens[t + 1] | tokens[:t + 1])`` per predicted token ``[B, T]`` in nats."""
        return -self._token_nll(params, batch, None)

    def init_cache(self, batch: int, length: int | None = None):
        cfg = self.config
        shape = (batch, length or cfg.context, cfg.heads, cfg.width // cfg.heads)
        if cfg.scan_layers:
            stacked = (cfg.layers, *shape)
            return jnp.zeros(stacked, self.dtype), jnp.zeros(stacked, self.dtype)
        return [(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)) for _ in range(cfg.layers)]

    def generate(self, params, prompt, key, num_new: int, *, temperature=None, top_k=None, top_p=None,
                 use_cache: bool = True):
        """Prompt int32 ``[B, P]`` -> ``[B, P + num_new]``. With the KV cache (the default) P + num_new must fit
        in the context; ``use_cache=False`` recomputes the last ``context`` tokens for every new token (nanoGPT's
        sliding window), which also generates past the context."""
        cfg = self.config
        temperature = cfg.temperature if temperature is None else temperature
        top_k = cfg.top_k if top_k is None else top_k
        top_p = cfg.top_p if top_p is None else top_p
        b, p = prompt.shape
        v = cfg.vocab_size  # tokens are drawn from the real vocabulary: the same draws as an unpadded model
        if use_cache:
            if p + num_new > cfg.context:
                raise ValueError(f"prompt ({p}) + new tokens ({num_new}) exceed the context ({cfg.context}); "
                                 "use use_cache=False for a sliding window")
            # A cache of the positions this call fills, not the whole context: attention cost grows with it.
            logits, cache = self.apply(params, prompt, None, self.init_cache(b, p + num_new), 0)

            def step(cache, tok, position):
                out, cache = self.apply(params, tok[:, None], None, cache, position)
                return out[:, -1, :v], cache

            new = decode_loop(step, cache, logits[:, -1, :v], p, num_new, key, temperature, top_k, top_p)
            return jnp.concatenate([prompt, new], axis=1)

        total = p + num_new
        window = min(cfg.context, total)
        buf = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompt)

        def logits_at(buf, length):
            start = jnp.maximum(length - window, 0)
            ctx = jax.lax.dynamic_slice_in_dim(buf, start, window, axis=1)
            return self.apply(params, ctx, at=length - 1 - start)[:, 0, :v]

        def step(buf, tok, position):
            buf = jax.lax.dynamic_update_slice_in_dim(buf, tok[:, None], position, axis=1)
            return logits_at(buf, position + 1), buf

        new = decode_loop(step, buf, logits_at(buf, p), p, num_new, key, temperature, top_k, top_p)
        return jnp.concatenate([prompt, new], axis=1)

    def _sample(self, params, key, num: int, prompt, tokens: int, temperature: float, top_k: int, top_p: float):
        """``num`` sequences of token ids ``[num, P + tokens]``: the prompt ``[num, P]`` (default: token 0, a newline
        for the character tokenizer) followed by ``tokens`` new ones; with the KV cache when they fit in the
        context, else nanoGPT's sliding window."""
        if prompt is None:
            prompt = jnp.zeros((num, 1), jnp.int32)
        fits = prompt.shape[1] + tokens <= self.config.context
        return self.generate(params, prompt, key, tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             use_cache=fits)

    def extras(self) -> dict:
        return {"apply": self.apply, "generate": self.generate, "logical_axes": self.logical_axes()}

    def flops_per_token(self) -> float:
        """Training FLOPs per token (forward + backward = 3x forward): 6 N for the weights plus attention
        (PaLM appendix B / nanoGPT's estimate_mfu: 6N + 12 L H Q T)."""
        cfg = self.config
        n = sum(int(x.size) for x in jax.tree.leaves(jax.eval_shape(self.init, jax.random.key(0))[0]))
        n -= cfg.context * cfg.width  # position embeddings do no matmul work
        return 6 * n + 12 * cfg.layers * cfg.width * cfg.context
