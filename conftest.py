"""Root conftest: registers the shared fixtures over the real test services."""

pytest_plugins = ["tests.support.fixtures"]
