"""ferlib: faithful, fast re-implementations of five facial-expression-recognition papers.

Entry points: :func:`ferlib.models.create_model`, :func:`ferlib.data.load_dataset`,
:func:`ferlib.recipes.load_recipe`, :func:`ferlib.engine.fit` / :func:`ferlib.engine.evaluate`.
"""

__version__ = "0.1.0"
