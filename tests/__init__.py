"""Test suite: real models on real photos; see conftest.py."""
