"""trainkit: recipes, a shared trainer, evaluation and a model zoo for image classification."""

__version__ = "0.1.0"
