"""The FID Inception-v3 port against pytorch-fid itself (needs the ``test`` extra: torch, torchvision, pytorch-fid).

pytorch-fid's ``InceptionV3(use_fid_inception=True)`` is built without any download: its ``load_state_dict_from_url``
is replaced by random weights (He-scaled convs, non-trivial BatchNorm statistics and affine parameters, fixed seed)
for the very network it builds. Those weights go through ``torch.save`` and our torch-free loader, and the two
networks are compared on the same images. Errors are ``max |ours - ref| / max |ref|`` over the batch.
"""

import os

import numpy as np
import pytest

from aigc_jax.core.errors import UserError

torch = pytest.importorskip("torch")
pfi = pytest.importorskip("pytorch_fid.inception")
fid_score = pytest.importorskip("pytorch_fid.fid_score")

from aigc_jax.metrics import inception as inc  # noqa: E402
from aigc_jax.metrics.distribution import feature_statistics, frechet_distance  # noqa: E402

F = torch.nn.functional


def _random_fid_weights(net, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(1000)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("running_mean"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("bn.weight"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith("bias"):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif v.ndim == 4:  # conv, He scaling so that activations stay O(1) through ~50 layers
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        else:  # fc
            sd[k] = torch.randn(v.shape, generator=g) / v.shape[1] ** 0.5
    return sd


@pytest.fixture(scope="module")
def torch_fid(tmp_path_factory):
    """(pytorch-fid's InceptionV3 block-3 model, its underlying Inception3 with ``fc``, the saved .pth path)."""
    built = []
    orig = pfi._inception_v3

    def record(*args, **kwargs):
        net = orig(*args, **kwargs)
        built.append(net)
        return net

    def no_download(url, progress=True, **kwargs):
        assert url == pfi.FID_WEIGHTS_URL
        return _random_fid_weights(built[-1])  # the FID blocks are already patched in when this is called

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pfi, "_inception_v3", record)
        mp.setattr(pfi, "load_state_dict_from_url", no_download)
        model = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], use_fid_inception=True).eval()
    net = built[-1].eval()
    path = tmp_path_factory.mktemp("inception") / "fid_random.pth"
    torch.save(net.state_dict(), path)
    return model, net, path


def _torch_ref(model, net, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = torch.from_numpy(images).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    with torch.no_grad():
        pool = model(x)[0].flatten(1)
        # The Inception Score's logits are the fc matmul without its (here non-zero) bias, as in the original IS code.
        assert net.fc.bias.abs().max() > 0.01
        return pool.numpy(), (pool @ net.fc.weight.T).numpy()


def _rel(ours, ref) -> float:
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_features_and_logits_match_pytorch_fid(torch_fid, monkeypatch):
    model, net, path = torch_fid
    monkeypatch.setattr(inc, "OFFICIAL_SHA256", inc.file_sha256(path))  # exercise the official-id branch
    ex = inc.InceptionExtractor(str(path))
    assert ex.image_shape == (299, 299, 3)
    assert ex.id.startswith("inception-v3/pt_inception-2015-12-05/sha256:")
    assert "resize:bilinear-299-align_corners=False" in ex.id and "gray:repeat-to-rgb" in ex.id
    assert ex.id.endswith("/is:logits-unbiased")

    rng = np.random.default_rng(0)
    rgb = rng.random((3, 32, 32, 3), dtype=np.float32)  # batch 2 + a padded last batch
    gray = rng.random((2, 28, 28, 1), dtype=np.float32)  # another resize, same compiled network
    for images in (rgb, gray):
        out = ex(images, batch_size=2)
        ref_feat, ref_logits = _torch_ref(model, net, images)
        assert out["features"].shape == (len(images), 2048) and out["logits"].shape == (len(images), 1008)
        assert np.abs(ref_feat).max() > 1.0 and ref_feat.std() > 0.1  # the random network is not degenerate
        for ours, ref in ((out["features"], ref_feat), (out["logits"], ref_logits)):
            assert _rel(ours, ref) <= 1e-4
            np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())


def test_loader_reads_zip_legacy_and_npz(torch_fid, tmp_path):
    _, net, zip_path = torch_fid
    ref = {k: v.numpy() for k, v in net.state_dict().items()}
    legacy = tmp_path / "legacy.pth"
    torch.save(net.state_dict(), legacy, _use_new_zipfile_serialization=False)
    npz = tmp_path / "weights.npz"
    np.savez(npz, **ref)
    for p in (zip_path, legacy, npz):
        got = inc.load_state_dict(p)
        assert got.keys() == ref.keys()
        for k in ref:
            assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape
            np.testing.assert_array_equal(got[k], ref[k])
    with pytest.warns(UserWarning, match="not the official"):
        ex = inc.InceptionExtractor(str(npz))
    assert f"custom-weights-{inc.file_sha256(npz)[:12]}" in ex.id


def test_loader_views_offsets_and_dtypes(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    tensors = {
        "transposed_slice": base[1:5, 2:9].t(),  # non-contiguous, storage offset > 0
        "row": base[3],
        "half": torch.linspace(-2, 2, 7, dtype=torch.float16),
        "double": torch.randn(3, 2, dtype=torch.float64),
        "long_scalar": torch.tensor(7),
        "int": torch.arange(5, dtype=torch.int32),
        "bool": torch.tensor([True, False, True]),
    }
    for legacy in (False, True):
        p = tmp_path / f"small_{legacy}.pth"
        torch.save(tensors, p, _use_new_zipfile_serialization=not legacy)
        got = inc.load_state_dict(p)
        for k, t in tensors.items():
            assert got[k].shape == tuple(t.shape)
            np.testing.assert_array_equal(got[k], t.numpy())


@pytest.mark.parametrize("hw", [(28, 28), (32, 32), (17, 45), (512, 400), (300, 298), (299, 299)])
def test_resize_matches_torch_interpolate(hw):
    x = np.random.default_rng(1).random((2, *hw, 3), dtype=np.float32)
    ours = np.asarray(inc.resize_bilinear(x))
    ref = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear",
                        align_corners=False).permute(0, 2, 3, 1).numpy()
    assert ours.shape == ref.shape == (2, 299, 299, 3)
    assert np.abs(ours - ref).max() <= 5e-7  # values in [0, 1]: absolute = relative; ~1e-7 float32 rounding


def test_missing_or_bad_weights_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv(inc.ENV_VAR, raising=False)
    with pytest.raises(UserError, match="--inception-weights PATH or AIGC_JAX_INCEPTION_WEIGHTS") as e:
        inc.InceptionExtractor()
    assert "nothing is downloaded" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        inc.InceptionExtractor(str(tmp_path / "missing.pth"))
    monkeypatch.setenv(inc.ENV_VAR, str(tmp_path / "also_missing.pth"))
    with pytest.raises(UserError, match="also_missing.pth"):
        inc.InceptionExtractor()
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(1000))
    with pytest.raises(UserError, match="cannot read Inception weights"):
        inc.InceptionExtractor(str(junk))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, wrong)
    with pytest.raises(UserError, match="do not match the FID Inception"):
        inc.InceptionExtractor(str(wrong))
    evil = tmp_path / "evil.pth"
    torch.save({"a": torch.zeros(1), "f": os.getcwd}, evil)
    with pytest.raises(UserError, match="refusing to unpickle"):
        inc.load_state_dict(evil)


def test_frechet_distance_matches_pytorch_fid():
    rng = np.random.default_rng(0)
    d = 64
    mix_a, mix_b = rng.normal(size=(d, d)) / np.sqrt(d), rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(400, d)) @ mix_a + 0.3
    b = rng.normal(size=(300, d)) @ mix_b
    mu_a, s_a = feature_statistics(a)
    mu_b, s_b = feature_statistics(b)
    ours = frechet_distance(mu_a, s_a, mu_b, s_b)
    ref = float(fid_score.calculate_frechet_distance(mu_a, s_a, mu_b, s_b))
    assert ref > 1.0
    assert abs(ours - ref) / abs(ref) <= 1e-6
