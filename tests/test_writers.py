"""The run writers' start-up cost and the sample hook's compiled sampler."""

import json
import subprocess
import sys

import numpy as np

from aigc_jax.core.registry import get_config
from aigc_jax.parallel import mesh as meshlib
from aigc_jax.train.sampling import draw
from aigc_jax.train.setup import build_setup


def test_the_tensorboard_writer_does_not_import_torch_and_torch_still_imports(tmp_path):
    """tensorboardX imports torch whenever it is installed (the test extra installs it); the run writer hides it
    during that import, writes its scalars, and leaves ``import torch`` working afterwards."""
    code = (
        "import sys, json\n"
        "from aigc_jax.train.writers import RunWriter\n"
        f"w = RunWriter({str(tmp_path)!r})\n"
        "w.write('train', 1, {'loss': 0.5}); w.close()\n"
        "hidden = 'torch' not in sys.modules\n"
        "import torch\n"
        "print(json.dumps({'hidden': hidden, 'torch': torch.__version__}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.splitlines()[-1])
    assert res["hidden"] and res["torch"]
    assert list(tmp_path.glob("events.out.tfevents.*"))
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 0.5


def test_repeated_sample_draws_reuse_one_compiled_sampler(devices):
    cfg = get_config("vae-mnist", "tiny")
    setup = build_setup(cfg, meshlib.make_mesh("", devices[:1]))
    state = setup.init_state(0)
    a = draw(setup, state, 4, seed=3)
    b = draw(setup, state, 4, seed=3)
    c = draw(setup, state, 4, seed=4)
    (fn,) = setup.samplers.values()
    assert fn._cache_size() == 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    draw(setup, state, 2, seed=3)
    assert len(setup.samplers) == 2  # another sample count is another program
