"""genderd: which department each shopper prefers, in real time, from Redis Streams."""

__version__ = "0.1.0"
