"""Helpers the tests share: servers, factories, the oracle, earlier data layouts."""
