"""Reusable layers shared by the paper models (attention gates, fusion blocks)."""
