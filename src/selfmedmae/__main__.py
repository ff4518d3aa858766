import sys

from selfmedmae.cli import main

sys.exit(main())
