"""Meshes, shardings and multi-host start-up."""

from aigc_jax.parallel.mesh import AXES as AXES
from aigc_jax.parallel.mesh import batch_sharding as batch_sharding
from aigc_jax.parallel.mesh import check_batch as check_batch
from aigc_jax.parallel.mesh import initialize_distributed as initialize_distributed
from aigc_jax.parallel.mesh import make_mesh as make_mesh
from aigc_jax.parallel.mesh import param_shardings as param_shardings
from aigc_jax.parallel.mesh import parse_mesh as parse_mesh
