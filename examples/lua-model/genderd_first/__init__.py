"""genderd model ``first``: the department of a shopper's first visit."""

from genderd_first.model import First, FirstPredictor

__all__ = ["First", "FirstPredictor"]
