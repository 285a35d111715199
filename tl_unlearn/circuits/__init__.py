"""Circuits: components and edges that carry a task, found and removed.

- :mod:`~tl_unlearn.circuits.maps`: component maps (every head or MLP ablated alone) and
  greedy circuits.
- :mod:`~tl_unlearn.circuits.graph`: :class:`Circuit`, an edge graph in EAP-IG's file format.
- :mod:`~tl_unlearn.circuits.edge_ablation`: :func:`edge_ablation`, the model run with only a
  circuit's edges clean.
- :mod:`~tl_unlearn.circuits.attribution`: activation patching, EAP and EAP-IG.
- :mod:`~tl_unlearn.circuits.faithfulness`: MIB faithfulness curves (CPR, CMD).
- :mod:`~tl_unlearn.circuits.induction`: induction and previous-token scores.
- :mod:`~tl_unlearn.circuits.ground_truth`: the planted models' verification table and
  localisation scores against their known circuits.
"""

from tl_unlearn.circuits.attribution import NodeScores, activation_patching, edge_attribution
from tl_unlearn.circuits.edge_ablation import edge_ablation
from tl_unlearn.circuits.faithfulness import FaithfulnessCurves, faithfulness_curves
from tl_unlearn.circuits.graph import Circuit
from tl_unlearn.circuits.maps import ComponentMap, component_selectivity_map, greedy_circuit

__all__ = [
    "Circuit",
    "ComponentMap",
    "FaithfulnessCurves",
    "NodeScores",
    "activation_patching",
    "component_selectivity_map",
    "edge_ablation",
    "edge_attribution",
    "faithfulness_curves",
    "greedy_circuit",
]
