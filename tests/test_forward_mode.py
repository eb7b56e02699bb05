"""Forward-mode AD (``jax.jvp``, ``jax.jacfwd``) through the models built on the hand-written kernels of `aigc_jax.nn`.

Outside `reverse_mode_kernels` those kernels are plain ``jax.numpy``, so a JVP regulariser or a Jacobian study can
differentiate a model's loss in forward mode; the JVP must equal the directional derivative ``<grad, v>`` of reverse
mode. The train step still traces its gradient with the hand-written VJPs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aigc_jax.models.autoregressive.gpt import GPT, GPTConfig
from aigc_jax.models.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig
from aigc_jax.nn import reverse_mode_kernels
from tests.helpers import random_like


def _tangent(tree, seed=7):
    """A random direction in params space, float32 like the params."""
    return random_like(tree, jax.random.key(seed))


def _vdot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def _check_jvp_equals_grad(f, params, rtol):
    v = _tangent(params)
    value, tangent = jax.jit(lambda p, v: jax.jvp(f, (p,), (v,)))(params, v)
    value_rev, grad = jax.jit(jax.value_and_grad(f))(params)
    np.testing.assert_array_equal(value, value_rev)
    directional = _vdot(grad, v)
    np.testing.assert_allclose(tangent, directional, rtol=rtol, atol=rtol * float(jnp.abs(directional)))
    return v


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def gpt(request):
    model = GPT(GPTConfig(vocab_size=11, context=8, layers=2, heads=2, width=16, compute_dtype=request.param))
    params, _ = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, 9), 0, 11)
    return model, params, {"tokens": tokens}


@pytest.fixture(scope="module")
def pixelcnn():
    model = PixelCNN(PixelCNNConfig(image_shape=(6, 6, 1), layers=2, channels=4, head_channels=8))
    params, _ = model.init(jax.random.key(0))
    image = jax.random.bernoulli(jax.random.key(2), 0.5, (3, 6, 6, 1)).astype(jnp.float32)
    return model, params, {"image": image}


def test_gpt_loss_jvp_equals_the_directional_derivative_of_grad(gpt):
    model, params, batch = gpt
    loss = lambda p: model.loss("gpt", p, {}, batch, None)[0]  # noqa: E731
    # bfloat16 activations: the two modes round differently (one bf16 rounding of each intermediate)
    _check_jvp_equals_grad(loss, params, rtol=1e-4 if model.dtype == jnp.float32 else 5e-2)


def test_gpt_jacfwd_of_the_loss_equals_jacrev(gpt):
    model, params, batch = gpt
    wte = params["gpt"]["wte"]

    def loss_of_embedding(e):
        return model.loss("gpt", {"gpt": {**params["gpt"], "wte": e}}, {}, batch, None)[0]

    fwd, rev = jax.jit(jax.jacfwd(loss_of_embedding))(wte), jax.jit(jax.jacrev(loss_of_embedding))(wte)
    assert fwd.shape == wte.shape
    tol = 1e-5 if model.dtype == jnp.float32 else 2e-2
    np.testing.assert_allclose(fwd, rev, atol=tol * float(jnp.abs(rev).max()))


def test_gpt_jacfwd_of_the_logits_is_causal(gpt):
    """jacfwd of the logits with respect to the position embeddings (used only at the input): the logits at t
    depend on positions <= t only, exactly."""
    model, params, batch = gpt
    p = params["gpt"]
    toks = batch["tokens"][:1, :-1]  # [1, T]

    def logits_of(wpe):
        return model.apply({"gpt": {**p, "wpe": wpe}}, toks)[0, :, 0]  # [T]

    jac = np.asarray(jax.jit(jax.jacfwd(logits_of))(p["wpe"]))  # [T, T, D]
    depends = (jac != 0).any(-1)  # [T, T]: does output t depend on position s
    t = depends.shape[0]
    later = np.arange(t)[None, :] > np.arange(t)[:, None]
    assert not depends[later].any() and depends[~later].all()


def test_pixelcnn_log_prob_jvp_equals_the_directional_derivative_of_grad(pixelcnn):
    model, params, batch = pixelcnn
    log_prob = lambda p: model.log_prob(p, batch).sum()  # noqa: E731
    _check_jvp_equals_grad(log_prob, params, rtol=1e-4)
    loss = lambda p: model.loss("pixelcnn", p, {}, batch, None)[0]  # noqa: E731
    _check_jvp_equals_grad(loss, params, rtol=1e-4)


def test_pixelcnn_jacfwd_of_log_prob_per_image(pixelcnn):
    model, params, batch = pixelcnn
    bias = params["pixelcnn"]["head2"]["bias"]

    def log_prob_of_bias(b):
        p = {"pixelcnn": {**params["pixelcnn"], "head2": {**params["pixelcnn"]["head2"], "bias": b}}}
        return model.log_prob(p, batch)  # [B]

    jac = jax.jacfwd(log_prob_of_bias)(bias)  # [B, 1]
    # d log p / d (bias of the logit) = sum over pixels of (x - sigmoid(logit)), in closed form
    lg = model.logits(params, batch["image"])
    expected = (batch["image"] - jax.nn.sigmoid(lg)).reshape(3, -1).sum(-1, keepdims=True)
    np.testing.assert_allclose(jac, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jac, jax.jacrev(log_prob_of_bias)(bias), rtol=1e-5, atol=1e-5)


def test_the_train_step_traces_its_gradient_with_the_hand_written_vjps():
    """`build_train_step` differentiates inside `reverse_mode_kernels`: its program holds the custom VJPs (the
    speed, and bit-identical training), while the same loss outside the step has none."""
    from aigc_jax.train.step import build_train_step, init_state

    model = GPT(GPTConfig(vocab_size=11, context=8, layers=1, heads=2, width=16))
    opt = {"gpt": optax.adam(1e-3)}
    step = build_train_step(model, opt, (("gpt", 1),), lambda batch, key: batch)
    state = init_state(model, opt, jax.random.key(0))
    batch = {"tokens": jnp.zeros((2, 9), jnp.int32)}
    assert "custom_vjp_call" in str(jax.make_jaxpr(step)(state, batch))
    loss = lambda p: model.loss("gpt", p, {}, batch, None)[0]  # noqa: E731
    assert "custom_vjp_call" not in str(jax.make_jaxpr(jax.grad(loss))(state["params"]))
    with reverse_mode_kernels():
        assert "custom_vjp_call" in str(jax.make_jaxpr(jax.grad(loss))(state["params"]))
