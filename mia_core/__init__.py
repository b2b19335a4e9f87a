"""mia_core: the science of meta-learned implicit neural representations, in pure PyTorch.

Layers: ``inr`` (batched INR families), ``adapt`` (inner-loop update rules), ``meta``
(the bi-level loop, losses and metrics), ``data`` (episode tensors and the synthetic
benchmark), ``config`` (typed YAML configs) and ``builders`` (config -> modules).
This package never imports ray, mlflow or pipelines.
"""

__version__ = "0.1.0"
