"""Test environment: 8 simulated CPU devices, strict rank and dtype promotion, warnings as errors."""

import atexit
import importlib.metadata
import os
import shutil
import tempfile

# Must happen before JAX is imported anywhere.
# LLVM optimisation level 1 for the compiled programs: the suite is dominated by compiling many tiny programs, and
# level 1 compiles several times faster than the default (a pix2pix train step: 43 s -> 11 s). Results agree with
# the default level to rounding, not bitwise (vectorised loops round differently): the suite's exact-equality
# tests compare two paths within one process. Set XLA_FLAGS yourself to test at another level.
# XLA:CPU's older elementwise emitters (`xla_cpu_use_fusion_emitters=false`), likewise: the suite's programs are
# mostly many small fusions (an init draws and zeroes every parameter), which these compile in about 20% less time
# (benchmarks/README.md, "The test suite"). Only on the jaxlib releases known to have the flag: XLA aborts the
# process on a flag it does not know.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=1"
if "xla_cpu_use_fusion_emitters" not in _flags and importlib.metadata.version("jaxlib").startswith("0.10."):
    _flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# One persistent compilation cache for the session, shared with the CLI subprocesses (and pytest-xdist workers)
# through the environment: many tests build the same tiny programs in fresh jits or processes, and a cache hit is
# the identical executable, so no result changes. A new empty folder per session (never a stale cache), removed by
# the process that made it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="aigc-jax-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

# Real-data features for the sample metrics (FID's reference statistics) go to one cache per session too, computed
# once and shared by the tests and workers, never written to the user's own ~/.cache/aigc_jax.
if "AIGC_JAX_CACHE" not in os.environ:
    _features = tempfile.mkdtemp(prefix="aigc-jax-test-features-")
    atexit.register(shutil.rmtree, _features, ignore_errors=True)
    os.environ["AIGC_JAX_CACHE"] = _features

# Tiny trained runs shared by the test modules and workers (`tests.helpers.tiny_run`), one folder per session.
if "AIGC_JAX_TEST_RUNS" not in os.environ:
    _runs = tempfile.mkdtemp(prefix="aigc-jax-test-runs-")
    atexit.register(shutil.rmtree, _runs, ignore_errors=True)
    os.environ["AIGC_JAX_TEST_RUNS"] = _runs

# The CLI's fast defaults (one device per core, bfloat16 on CPUs that have it) would make a test's numerics depend
# on the host; tests/test_host.py turns them on where it checks them.
os.environ["AIGC_JAX_FAST_DEFAULTS"] = "0"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# A strict numerical environment (equinox's habit): no implicit rank broadcasting, no implicit dtype promotion
# (Python scalars stay weakly typed), and warnings are errors (pyproject.toml's filterwarnings, with its allow-list).
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_numpy_dtype_promotion", "strict")

# NaN is never "close" or "equal" to NaN here: numpy's assert_allclose and assert_array_equal count NaN == NaN as
# equal by default, so two paths that both produce NaN (a derivative through a division by zero, say) would pass an
# equality test. A test that means to compare NaNs says equal_nan=True.
_assert_allclose, _assert_array_equal = np.testing.assert_allclose, np.testing.assert_array_equal


def _assert_allclose_nan_unequal(actual, desired, *args, equal_nan=False, **kwargs):
    __tracebackhide__ = True
    return _assert_allclose(actual, desired, *args, equal_nan=equal_nan, **kwargs)


def _has_nan(x) -> bool:
    try:
        a = np.asarray(x)
    except (TypeError, ValueError):  # typed PRNG keys, ragged lists: left to numpy's own comparison
        return False
    if a.dtype.kind == "V" and "float" in a.dtype.name:  # ml_dtypes' bfloat16, float8_*: numpy kind "V"
        a = a.astype(np.float32)
    return a.dtype.kind in "fc" and bool(np.isnan(a).any())


def _assert_array_equal_nan_unequal(actual, desired, *args, equal_nan=False, **kwargs):
    __tracebackhide__ = True
    if not equal_nan and (_has_nan(actual) or _has_nan(desired)):
        raise AssertionError("arrays compared for equality hold NaN (pass equal_nan=True if that is meant)")
    return _assert_array_equal(actual, desired, *args, **kwargs)


np.testing.assert_allclose = _assert_allclose_nan_unequal
np.testing.assert_array_equal = _assert_array_equal_nan_unequal


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, "tests expect 8 simulated CPU devices"
    return devs


@pytest.fixture
def one_device_mesh(devices):
    from aigc_jax.parallel import make_mesh

    return make_mesh("", devices[:1])
