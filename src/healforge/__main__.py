import sys

from healforge.cli import main

sys.exit(main())
