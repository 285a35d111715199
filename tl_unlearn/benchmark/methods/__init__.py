"""The benchmark's methods, one module per family, and the registry that names them.

- :mod:`~tl_unlearn.benchmark.methods.base`: options, the fit context, a fitted method.
- :mod:`~tl_unlearn.benchmark.methods.pruning`: ``prune-abs``, ``prune-freq``, ``prune-sd``.
- :mod:`~tl_unlearn.benchmark.methods.head_mean`: ``head-mean``.
- :mod:`~tl_unlearn.benchmark.methods.sae`: ``sae-features``.
- :mod:`~tl_unlearn.benchmark.methods.actadd`: ``actadd``.
- :mod:`~tl_unlearn.benchmark.methods.edges`: ``eap``, ``eap-ig``, ``patching``.
- :mod:`~tl_unlearn.benchmark.methods.registry`: :data:`METHODS`, :func:`fit_method`,
  :func:`check_options`.
"""

from tl_unlearn.benchmark.methods.base import FittedMethod, MethodContext, Options
from tl_unlearn.benchmark.methods.edges import EDGE_METHODS
from tl_unlearn.benchmark.methods.registry import METHODS, check_options, fit_method, option_keys

__all__ = [
    "EDGE_METHODS",
    "METHODS",
    "FittedMethod",
    "MethodContext",
    "Options",
    "check_options",
    "fit_method",
    "option_keys",
]
