import sys

from gradviz.cli import entry

sys.exit(entry())
