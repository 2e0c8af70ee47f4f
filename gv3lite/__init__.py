"""gv3lite: an educational, working reproduction of GhostNetV3 (Liu et al., arXiv 2404.11202).

The public API is small and re-exported here; each concept lives in its own module (see DEVELOPERS.md):
``create_model`` / ``list_models`` (models.py), ``reparameterize`` (reparam.py),
``load_checkpoint`` (checkpoint.py), ``count_params`` / ``count_macs`` (counting.py).
"""

__version__ = "0.1.0"

from gv3lite.reparam import reparameterize  # noqa: E402
from gv3lite.models import create_model, list_models  # noqa: E402
from gv3lite.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from gv3lite.counting import count_macs, count_params, model_summary  # noqa: E402

__all__ = ["__version__", "create_model", "list_models", "reparameterize", "load_checkpoint", "save_checkpoint",
           "count_params", "count_macs", "model_summary"]
