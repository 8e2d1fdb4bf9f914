"""Shared test infrastructure: real services and the pytest fixtures over them."""
