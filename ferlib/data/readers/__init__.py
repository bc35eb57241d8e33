"""The dataset readers: one module per dataset name, each declaring its record with ``@register_dataset``
(:mod:`ferlib.data.registry`). Every module in this folder is imported, so adding a dataset is adding a
file here (data/README.md, "Adding a dataset")."""
from ferlib.discover import import_submodules

import_submodules(__name__, __path__)
