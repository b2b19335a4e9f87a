"""Meta-continual learning of neural fields (MCL-NF).

Task sequences, modular INRs, the FIM loss, and the baselines MAML+CL, OML, ER and EWC.
"""

from mia_core.mcl.fim import FIMLearner, fim_weights, update_fisher, weighted_mse
from mia_core.mcl.modular import ModularINR
from mia_core.mcl.sequence import (
    CONTINUAL_METHODS,
    ContinualSpec,
    ContinualState,
    SequenceLearner,
)
from mia_core.mcl.tasks import AxisPartition, Task, TaskSequence, TaskStream, grid_task_sequence

__all__ = [
    "CONTINUAL_METHODS",
    "AxisPartition",
    "ContinualSpec",
    "ContinualState",
    "FIMLearner",
    "ModularINR",
    "SequenceLearner",
    "Task",
    "TaskSequence",
    "TaskStream",
    "fim_weights",
    "grid_task_sequence",
    "update_fisher",
    "weighted_mse",
]
