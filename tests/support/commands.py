"""Running `genderd` commands in-process (click's runner) against a test's server."""

from __future__ import annotations

from click.testing import CliRunner, Result

from genderd.cli import main
from genderd.settings import Settings


def cli(redis_url: str, settings: Settings, *args: str, genders: str | None = None) -> Result:
    """`genderd ARGS` with ``settings``' shard count and genders (``genders``: others, as the
    GENDERD_GENDERS of this command only), over the server at ``redis_url``."""
    env = {
        "GENDERD_REDIS_URL": redis_url,
        "GENDERD_SHARDS": str(settings.shards),
        "GENDERD_GENDERS": genders or ",".join(settings.genders),
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
