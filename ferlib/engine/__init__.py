"""The one training / evaluation engine for all five papers."""
from .checkpoint import atomic_save, load_checkpoint, save_checkpoint
from .distributed import init_distributed
from .loader import EpochSampler, ResumableSampler
from .loop import FitOptions, evaluate, fit, predict
from .training import DataOptions, RunDirOptions, RunResult, load_run, load_recipe_splits, train

__all__ = ["DataOptions", "EpochSampler", "FitOptions", "ResumableSampler", "RunDirOptions", "RunResult", "atomic_save",
           "evaluate", "fit", "init_distributed", "load_checkpoint", "load_run",
           "load_recipe_splits", "predict", "save_checkpoint", "train"]
