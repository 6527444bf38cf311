import sys

from stacker.apps.cli import main

sys.exit(main())
