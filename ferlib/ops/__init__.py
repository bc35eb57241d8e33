"""Numerical kernels shared by the models: the selective scan (FERMam's SS2D)."""
from .selective_scan import BACKENDS, cuda_backend_available, linear_scan, selective_scan

__all__ = ["BACKENDS", "cuda_backend_available", "linear_scan", "selective_scan"]
