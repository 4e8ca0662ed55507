"""``python -m cl_bayes.report``: the leaderboard's command line (see ``cl_bayes.report``)."""

import sys

from cl_bayes.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
