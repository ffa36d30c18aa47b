"""Evaluation of the face pipeline: datasets, metrics, reports."""
