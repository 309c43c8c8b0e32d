"""`eval_superb.py`: parse, check, evaluate; a configuration or data mistake is one line and exit code 2 (audio
files it cannot use are named together in that line)."""

import logging
import sys

from .arguments import parse
from .runner import run
from .tasks import TaskDataError
from .upstream import UpstreamError

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        run(args)
    except (ValueError, FileNotFoundError, KeyError, TaskDataError, UpstreamError) as error:
        logger.debug("error details", exc_info=True)
        print(f"eval_superb.py: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
