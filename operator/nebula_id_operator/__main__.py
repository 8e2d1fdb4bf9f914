"""`python -m nebula_id_operator [flags]`: the operator without the main CLI."""

import sys

from nebula_id_operator import cli

sys.exit(cli.main(sys.argv[1:]))
